//! AdamW over ONE flat parameter buffer (WORKLOAD.md: lr 1e-4, betas (0.9, 0.999), eps 1e-8,
//! weight decay 0.01 on every parameter, no schedule). The parameters become views into the
//! buffer, like the gradients in `dist::FlatGrads`, so an update is one pass of libtorch's fused
//! AdamW kernel over the whole model (on any device) instead of a loop over tensors — and its
//! whole state (parameters, both moments, step count) is three tensors and a number that a
//! checkpoint can save and restore.
//! The rule is PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments).
//!
//! Sharded ([`AdamW::sharded`], ZeRO stage 1 within a host): the ranks of a host keep ONE copy of
//! the parameters and both moments, in memory they share, and each updates only its own segment,
//! the one whose gradient sum it computed ([`crate::dist::NodeBuffer::reduce_scatter`]). Each rank
//! then does 1/L of the update and the host holds a third of the state it would otherwise hold
//! L times; the update of each value is the same arithmetic as unsharded, so results are
//! bit-for-bit those of the replicated optimiser.

mod aten;

use crate::dist::NodeBuffer;
use std::ops::Range;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

/// WORKLOAD.md's AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    pub fn workload(lr: f64) -> Self {
        AdamWConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// The optimiser and the flat buffer its parameters live in.
pub struct AdamW {
    config: AdamWConfig,
    params: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// `steps` as a one-element tensor on the buffers' device, which the kernel reads.
    step_count: Tensor,
    steps: u64,
    /// Where the state is shared by the host's ranks (sharded), the buffer that holds it.
    shard: Option<Rc<NodeBuffer>>,
}

/// The saved state of an `AdamW`: flat CPU tensors by name, and the step count.
#[derive(Debug)]
pub struct AdamWState {
    pub tensors: Vec<(String, Tensor)>,
    pub steps: u64,
}

const STATE_NAMES: [&str; 3] = ["params", "exp_avg", "exp_avg_sq"];

impl AdamW {
    /// Moves `vars` into one flat buffer (their values unchanged) and makes each a view of it.
    pub fn new(vars: &[Tensor], config: AdamWConfig) -> Self {
        let _guard = tch::no_grad_guard();
        let device = vars.first().map_or(Device::Cpu, |v| v.device());
        let params = Tensor::cat(&vars.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(), 0);
        for (v, view) in vars.iter().zip(crate::dist::views(&params, vars)) {
            v.shallow_clone().set_data(&view);
        }
        let zeros = || Tensor::zeros_like(&params);
        debug_assert_eq!(params.device(), device);
        AdamW {
            config,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            step_count: Tensor::zeros([], (Kind::Float, device)),
            params,
            steps: 0,
            shard: None,
        }
    }

    /// As [`AdamW::new`], with the parameters and moments in `node`'s host region, shared by the
    /// host's ranks, each of which updates its [`NodeBuffer::segment`]. Collective over the host;
    /// every rank must hold the same `vars` values (rank 0's, broadcast), and CPU tensors.
    pub fn sharded(vars: &[Tensor], config: AdamWConfig, node: Rc<NodeBuffer>) -> Self {
        let _guard = tch::no_grad_guard();
        let n: usize = vars.iter().map(|v| v.numel()).sum();
        let (base, len) = node.host_region();
        assert!(len >= 3 * n, "a host region of {len} f32 for 3 × {n}");
        assert!(vars.iter().all(|v| v.device() == Device::Cpu), "shared state is on the CPU");
        // SAFETY: three disjoint runs of `n` f32 in the host region, which is never freed.
        let blob = |k: usize| unsafe {
            Tensor::from_blob(base.add(k * n).cast(), &[n as i64], &[1], Kind::Float, Device::Cpu)
        };
        let (params, exp_avg, exp_avg_sq) = (blob(0), blob(1), blob(2));
        // Each rank writes its own segment of the (equal) starting values; the moments are zero.
        let seg = node.segment();
        let values = Tensor::cat(&vars.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(), 0);
        narrow(&params, &seg).copy_(&narrow(&values, &seg));
        node.sync();
        for (v, view) in vars.iter().zip(crate::dist::views(&params, vars)) {
            v.shallow_clone().set_data(&view);
        }
        let step_count = Tensor::zeros([], (Kind::Float, Device::Cpu));
        AdamW { config, params, exp_avg, exp_avg_sq, step_count, steps: 0, shard: Some(node) }
    }

    /// Whether the host's ranks share this optimiser's state, each updating a segment.
    pub fn is_sharded(&self) -> bool {
        self.shard.is_some()
    }

    /// The elements this rank updates.
    fn segment(&self) -> Range<usize> {
        self.shard.as_ref().map_or(0..self.params.numel(), |node| node.segment())
    }

    /// Optimiser steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The buffer every parameter is a view of.
    pub fn params(&self) -> &Tensor {
        &self.params
    }

    /// One update from `grad`, a flat gradient laid out like the parameter buffer. Sharded, only
    /// this rank's segment of `grad` is read (it must hold the summed gradient there), and the
    /// call ends with a barrier of the host's ranks, after which every rank sees the whole
    /// update.
    pub fn step(&mut self, grad: &Tensor) {
        let updated = self.update(grad, false);
        debug_assert!(updated);
    }

    /// As [`AdamW::step`], where nothing has yet read `grad` for NaNs and infinities: whether it
    /// had none. The verdict is made on the buffers' device (a sum is non-finite when any value
    /// is) and the kernel reads it there, skipping the whole update on a bad one, so on a GPU
    /// the host does not wait for the check before queueing the update; it reads the verdict
    /// after, a wait the step's synchronise that follows makes anyway. After `false` nothing
    /// has changed, and the caller stops training (as `Trainer` does). Not sharded (a sharded
    /// update's gradient was checked as it was summed).
    pub(crate) fn step_if_finite(&mut self, grad: &Tensor) -> bool {
        assert!(self.shard.is_none(), "a sharded gradient is checked where it is summed");
        self.update(grad, true)
    }

    fn update(&mut self, grad: &Tensor, check: bool) -> bool {
        let _guard = tch::no_grad_guard();
        assert_eq!(grad.numel(), self.params.numel(), "one gradient per parameter");
        self.steps += 1;
        let _ = self.step_count.fill_(self.steps as f64);
        let found_inf =
            check.then(|| grad.sum(Kind::Float).isfinite().logical_not().to_kind(Kind::Float));
        // This rank's segment of each buffer (all of it, unless sharded): contiguous views.
        let seg = self.segment();
        let grad = narrow(&grad.contiguous(), &seg);
        let (params, exp_avg, exp_avg_sq) = (
            narrow(&self.params, &seg),
            narrow(&self.exp_avg, &seg),
            narrow(&self.exp_avg_sq, &seg),
        );
        let buffers = [&params, &grad, &exp_avg, &exp_avg_sq];
        aten::fused_adamw(buffers, &self.step_count, found_inf.as_ref(), &self.config);
        if let Some(node) = &self.shard {
            node.sync();
        }
        let finite = found_inf.is_none_or(|bad| bad.double_value(&[]) == 0.0);
        if !finite {
            self.steps -= 1; // skipped: nothing changed
        }
        finite
    }

    /// A copy of the state on the CPU, for a checkpoint.
    pub fn state(&self) -> AdamWState {
        let tensors = [&self.params, &self.exp_avg, &self.exp_avg_sq]
            .into_iter()
            .zip(STATE_NAMES)
            .map(|(t, name)| (name.to_string(), t.to(Device::Cpu).copy()))
            .collect();
        AdamWState { tensors, steps: self.steps }
    }

    /// Restores a checkpointed state; fails (changing nothing) when it does not fit this model.
    pub fn load_state(&mut self, state: &AdamWState) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        let numel = self.params.numel();
        let mut found = Vec::new();
        for name in STATE_NAMES {
            let t = state
                .tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("no tensor named {name}"))?;
            if t.kind() != Kind::Float || t.size() != [numel as i64] {
                return Err(format!(
                    "{name} is {:?} {:?}, the model needs Float [{numel}]",
                    t.kind(),
                    t.size()
                ));
            }
            found.push(t);
        }
        // Sharded, each rank writes its own segment of the (equal) state, between barriers: no
        // rank may still be reading the old values, and every rank sees all the new ones after.
        let sync = || self.shard.as_ref().inspect(|node| node.sync());
        sync();
        let seg = self.segment();
        for (dst, src) in [&self.params, &self.exp_avg, &self.exp_avg_sq].into_iter().zip(found) {
            narrow(dst, &seg).copy_(&narrow(src, &seg));
        }
        sync();
        self.steps = state.steps;
        Ok(())
    }
}

/// Elements `range` of the flat tensor `t`.
fn narrow(t: &Tensor, range: &Range<usize>) -> Tensor {
    t.narrow(0, range.start as i64, range.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    /// The same update as libtorch's own AdamW (tch's `nn::AdamW`), to float rounding.
    #[test]
    fn matches_libtorch_adamw() {
        use tch::nn::OptimizerConfig;
        let make = || {
            tch::manual_seed(7);
            let vs = nn::VarStore::new(Device::Cpu);
            let lin = nn::linear(vs.root() / "l", 5, 3, Default::default());
            (vs, lin)
        };
        let (vs_a, lin_a) = make();
        // The same starting values (tests share torch's RNG, so a second seeded init may differ).
        let (mut vs_b, lin_b) = make();
        vs_b.copy(&vs_a).unwrap();
        let vars_a = vs_a.trainable_variables();
        let initial = lin_a.ws.copy();
        let mut ours = AdamW::new(&vars_a, AdamWConfig::workload(1e-2));
        let theirs_cfg =
            nn::AdamW { beta1: 0.9, beta2: 0.999, wd: 0.01, eps: 1e-8, amsgrad: false };
        let mut theirs = theirs_cfg.build(&vs_b, 1e-2).unwrap();
        for k in 0..5 {
            let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, k as f32]).view([1, 5]);
            for v in &vars_a {
                let _ = v.grad().f_zero_();
            }
            theirs.zero_grad();
            tch::nn::Module::forward(&lin_a, &x).square().sum(Kind::Float).backward();
            tch::nn::Module::forward(&lin_b, &x).square().sum(Kind::Float).backward();
            let grad =
                Tensor::cat(&vars_a.iter().map(|v| v.grad().flatten(0, -1)).collect::<Vec<_>>(), 0);
            ours.step(&grad);
            theirs.step();
        }
        let a =
            Tensor::cat(&[lin_a.ws.flatten(0, -1), lin_a.bs.as_ref().unwrap().shallow_clone()], 0);
        let b =
            Tensor::cat(&[lin_b.ws.flatten(0, -1), lin_b.bs.as_ref().unwrap().shallow_clone()], 0);
        assert!(a.allclose(&b, 1e-6, 1e-7, false), "{a:?} vs {b:?}");
        assert!(!lin_a.ws.allclose(&initial, 1e-3, 1e-3, false), "the parameters moved");
        assert_eq!(ours.steps(), 5);
        // The parameters are views of the buffer the optimiser updates.
        let flat = Tensor::cat(&vars_a.iter().map(|v| v.flatten(0, -1)).collect::<Vec<_>>(), 0);
        assert!(ours.params().equal(&flat));
    }

    /// A non-contiguous gradient updates as its contiguous copy does, bit for bit.
    #[test]
    fn a_strided_gradient_updates_as_its_copy() {
        let start = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0, 3.0, -0.25]);
        let mut a = AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2));
        let mut b = AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2));
        for k in 0..4 {
            let wide = Tensor::arange(12, (Kind::Float, Device::Cpu)) * 0.3 - k as f64;
            let grad = wide.slice(0, 0, 12, 2); // every other element: not contiguous
            assert!(!grad.is_contiguous());
            a.step(&grad.contiguous());
            b.step(&grad);
        }
        assert!(a.params().equal(b.params()) && a.exp_avg_sq.equal(&b.exp_avg_sq));
        assert!(!a.params().allclose(&start, 1e-3, 1e-3, false), "the parameters moved");
    }

    /// A checked update of a finite gradient is the unchecked one, bit for bit; a NaN or an
    /// infinity anywhere skips the whole update: `false`, the parameters, both moments and the
    /// step count exactly as they were.
    #[test]
    fn a_non_finite_gradient_changes_nothing() {
        let n = 10_000;
        let start = Tensor::arange(n, (Kind::Float, Device::Cpu)) * 1e-4 - 0.1;
        let grad = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37).sin();
        let (mut plain, mut checked) = (
            AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2)),
            AdamW::new(&[start.copy()], AdamWConfig::workload(1e-2)),
        );
        for _ in 0..3 {
            plain.step(&grad);
            assert!(checked.step_if_finite(&grad));
        }
        assert!(plain.params().equal(checked.params()));
        assert!(
            plain.exp_avg.equal(&checked.exp_avg) && plain.exp_avg_sq.equal(&checked.exp_avg_sq)
        );
        let before = [checked.params(), &checked.exp_avg, &checked.exp_avg_sq].map(|t| t.copy());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, n / 2 + 7, n - 1] {
                let poisoned = grad.copy();
                let _ = poisoned.narrow(0, at, 1).fill_(bad as f64);
                assert!(!checked.step_if_finite(&poisoned), "{bad} at {at} went unnoticed");
                let after = [checked.params(), &checked.exp_avg, &checked.exp_avg_sq];
                for (b, a) in before.iter().zip(after) {
                    assert!(b.equal(a), "{bad} at {at}: the state changed");
                }
                assert_eq!(checked.steps(), 3, "{bad} at {at}: a skipped update counted");
            }
        }
        // Training could go on from there as if the bad gradient had never come.
        plain.step(&grad);
        assert!(checked.step_if_finite(&grad));
        assert!(plain.params().equal(checked.params()));
    }

    #[test]
    fn state_round_trips_and_rejects_another_model() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "l", 2, 2, Default::default());
        let mut opt = AdamW::new(&vs.trainable_variables(), AdamWConfig::workload(0.1));
        opt.step(&Tensor::ones([6], (Kind::Float, Device::Cpu)));
        let saved = opt.state();
        let before = opt.params().copy();
        opt.step(&Tensor::ones([6], (Kind::Float, Device::Cpu)));
        assert!(!opt.params().equal(&before));
        opt.load_state(&saved).unwrap();
        assert!(opt.params().equal(&before));
        assert_eq!(opt.steps(), 1);

        let vs2 = nn::VarStore::new(Device::Cpu);
        let _ = nn::linear(vs2.root() / "l", 3, 2, Default::default());
        let mut other = AdamW::new(&vs2.trainable_variables(), AdamWConfig::workload(0.1));
        assert!(other.load_state(&saved).unwrap_err().contains("params"));
    }
}
