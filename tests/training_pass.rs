//! The training pass with dropout against autograd's, with the same masks: torch's generator is
//! reseeded before each, so this is the only test in its process (tests running side by side in
//! one process would draw from the generator in between).

use dp_bench::config::{AllReduce, Preset};
use dp_bench::dist::{FlatGrads, Solo};
use dp_bench::model::{Gpt, GptConfig};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn training_pass_with_dropout_matches_autograd() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Gpt::new(&vs.root(), GptConfig::new(Preset::Tiny.dims(), 50, 0.1));
    let grads = FlatGrads::new(&vs.trainable_variables(), &Solo, AllReduce::Mpi);
    let idx = Tensor::randint(50, [3, 9], (Kind::Int64, Device::Cpu));
    let index = Tensor::from_slice(&[0i64, 4, 5, 13, 26]);
    let labels = Tensor::from_slice(&[3i64, 49, 0, 7, 7]);
    let scale = 1.0 / 7.0;

    tch::manual_seed(1);
    let expected = m.target_loss_sum(&m.hidden(&idx, true), &index, &labels);
    (&expected * scale).backward();
    let autograd = grads.buffer().copy();
    let _ = grads.buffer().shallow_clone().fill_(7.0);
    tch::manual_seed(1);
    let loss = m.forward_backward(&idx, &index, &labels, scale);
    assert!(loss.allclose(&expected, 1e-5, 1e-5, false), "loss {loss} against {expected}");
    let diff = (grads.buffer() - &autograd).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "gradients differ by {diff}");

    // Another seed draws other masks: the comparison above can tell masks apart.
    let _ = grads.buffer().shallow_clone().fill_(0.0);
    tch::manual_seed(2);
    let _ = m.forward_backward(&idx, &index, &labels, scale);
    let diff = (grads.buffer() - &autograd).abs().max().double_value(&[]);
    assert!(diff > 1e-4, "other masks, same gradients (differ by {diff})");
}
