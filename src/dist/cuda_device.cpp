// A rank's GPU through libtorch's own device-generic interfaces (the CUDA implementations
// libtorch_cuda registers), so only c10's headers are needed, no CUDA headers:
// - the current device, set through libtorch's device guard, so that libtorch's record of it and
//   the CUDA runtime's agree and nothing of this rank lands on GPU 0 by default;
// - the caching allocator: its cached blocks handed back to the driver (a rank waiting its turn
//   at a gate), the peak of the memory it reserved on a GPU (reset after each reading), and a
//   GPU's free and total memory.
// Each returns NULL, or the error's message (malloc'd; the caller frees it): on a machine
// without a GPU, CUDA's own.
#include <c10/core/CachingDeviceAllocator.h>
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

extern "C" char *dp_bench_cuda_empty_cache() {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->emptyCache();
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

extern "C" char *dp_bench_cuda_peak_reserved(int index, long long *bytes) {
  try {
    auto *allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    auto device = static_cast<c10::DeviceIndex>(index);
    *bytes = allocator->getDeviceStats(device).reserved_bytes[0].peak;  // StatType::AGGREGATE
    allocator->resetPeakStats(device);
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}

extern "C" char *dp_bench_cuda_memory_info(int index, long long *free_bytes, long long *total) {
  try {
    auto info = c10::getDeviceAllocator(c10::DeviceType::CUDA)
                    ->getMemoryInfo(static_cast<c10::DeviceIndex>(index));
    *free_bytes = static_cast<long long>(info.first);
    *total = static_cast<long long>(info.second);
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  }
}
