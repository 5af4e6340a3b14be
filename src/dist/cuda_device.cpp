// Makes a GPU the calling thread's current CUDA device through libtorch's own device guard (the
// CUDA implementation libtorch_cuda registers), so libtorch's record of the current device and
// the CUDA runtime's agree, and nothing of this rank lands on GPU 0 by default. Only c10's
// device-generic headers are needed, no CUDA headers. Returns NULL, or the error's message
// (malloc'd; the caller frees it): on a machine without a GPU, CUDA's own.
#include <c10/core/Device.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <cstring>
#include <exception>

extern "C" char *dp_bench_set_cuda_device(int index) {
  try {
    const auto *cuda = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
    cuda->setDevice(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index)));
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}
