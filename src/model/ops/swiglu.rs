//! SwiGLU `silu(gate) ⊙ up`, computed in f32.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::cpu::{for_each_row, storage_f32, storage_from_f32, tensor_from_f32, with_f32, OutPtr};
use super::exp;

/// `silu(gate) ⊙ up` for operands of one shape; fused on the CPU.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !super::fused_for(&[gate, up]) || gate.shape() != up.shape() || gate.dtype() != up.dtype() {
        return swiglu_composed(gate, up);
    }
    super::count_fused_call();
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

/// The explicit composition.
pub fn swiglu_composed(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(gate)? * up
}

/// Row width used to spread the elementwise loops over threads.
const CHUNK: usize = 4096;

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = storage_f32(s1, l1)?;
        let u = storage_f32(s2, l2)?;
        let mut out = vec![0f32; g.len()];
        let n = g.len();
        for_each_chunk(&mut out, |start, y| {
            let end = start + y.len();
            silu_times(y, &g[start..end], &u[start..end]);
        });
        debug_assert_eq!(out.len(), n);
        Ok((storage_from_f32(out, s1.dtype())?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (want_g, want_u) = (gate.track_op(), up.track_op());
        if !want_g && !want_u {
            return Ok((None, None));
        }
        with_f32(gate, |g| {
            with_f32(up, |u| {
                with_f32(grad, |dy| {
                    let n = g.len();
                    let (dg, du) = match (want_g, want_u) {
                        (true, true) => {
                            // One sigmoid pass for both gradients.
                            let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
                            let du_out = OutPtr(du.as_mut_ptr());
                            for_each_chunk(&mut dg, |start, out| {
                                let end = start + out.len();
                                // SAFETY: the chunks are disjoint ranges of `dg`, so the same
                                // ranges of `du` (as long) are too.
                                let du = unsafe { du_out.slice(start, out.len()) };
                                let (g, u, dy) = (&g[start..end], &u[start..end], &dy[start..end]);
                                both_grads(out, du, g, u, dy);
                            });
                            (Some(dg), Some(du))
                        }
                        (true, false) => {
                            let mut dg = vec![0f32; n];
                            for_each_chunk(&mut dg, |start, out| {
                                let end = start + out.len();
                                gate_grad(out, &g[start..end], &u[start..end], &dy[start..end]);
                            });
                            (Some(dg), None)
                        }
                        _ => {
                            let mut du = vec![0f32; n];
                            for_each_chunk(&mut du, |start, out| {
                                let end = start + out.len();
                                silu_times(out, &g[start..end], &dy[start..end]);
                            });
                            (None, Some(du))
                        }
                    };
                    let tensor = |v: Vec<f32>, like: &Tensor| {
                        tensor_from_f32(v, like.shape(), like.dtype(), like.device())
                    };
                    Ok((
                        dg.map(|v| tensor(v, gate)).transpose()?,
                        du.map(|v| tensor(v, up)).transpose()?,
                    ))
                })
            })
        })
    }
}

/// `out = g · σ(g) ⊙ x`: the forward with `x = up`, the up gradient with `x = dy`.
fn silu_times(out: &mut [f32], g: &[f32], x: &[f32]) {
    exp::sigmoid(out, g);
    for ((o, gv), xv) in out.iter_mut().zip(g).zip(x) {
        *o *= gv * xv;
    }
}

/// `out = dy ⊙ up ⊙ silu′(g)`, the gate gradient, with `silu′(g) = σ(g)·(1 + g·(1 − σ(g)))`.
fn gate_grad(out: &mut [f32], g: &[f32], u: &[f32], dy: &[f32]) {
    exp::sigmoid(out, g);
    for (((o, gv), uv), dyv) in out.iter_mut().zip(g).zip(u).zip(dy) {
        let s = *o;
        *o = dyv * uv * s * (1.0 + gv * (1.0 - s));
    }
}

/// Both gradients from one sigmoid pass: `dg` as [`gate_grad`], `du` as [`silu_times`] with
/// `x = dy` (the same expressions, so the same bits).
fn both_grads(dg: &mut [f32], du: &mut [f32], g: &[f32], u: &[f32], dy: &[f32]) {
    exp::sigmoid(dg, g);
    for ((((dg, du), gv), uv), dyv) in dg.iter_mut().zip(du).zip(g).zip(u).zip(dy) {
        let s = *dg;
        *du = s * (gv * dyv);
        *dg = dyv * uv * s * (1.0 + gv * (1.0 - s));
    }
}

/// Elementwise loop over `out` in chunks (the last one may be shorter), `f(start, chunk)`.
fn for_each_chunk(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    let whole = out.len() / CHUNK * CHUNK;
    let (head, tail) = out.split_at_mut(whole);
    for_each_row(head, CHUNK, |r, chunk| f(r * CHUNK, chunk));
    if !tail.is_empty() {
        f(whole, tail);
    }
}
