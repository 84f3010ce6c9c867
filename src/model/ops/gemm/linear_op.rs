//! The linear product `y = x·Wᵀ` as a candle custom op on `(x, W)`: forward, input gradient
//! `g·W` and weight gradient `gᵀ·x` are all [`sgemm`](super::sgemm) calls. A gradient is computed only for an
//! operand that carries a graph, so a frozen `W` (a plain tensor) costs no weight-gradient
//! product and an input without a graph costs no input-gradient product. With a
//! [`GradSink`], the weight gradient goes there instead of to candle's backward.

use std::sync::Arc;

use candle_core::{
    bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor, TensorId,
};

use super::{sgemm_new as product, Operand};
use crate::model::grad_sink::GradSink;

/// Whether [`linear`] takes `x` and `w`: fused ops on ([`crate::model::ops::set_fused`]), both
/// f32 on the CPU, `W` a matrix and `x` of rank 2 or more. Otherwise callers keep candle's
/// matmul (CUDA, Metal, half types).
pub fn handles(x: &Tensor, w: &Tensor) -> bool {
    crate::model::ops::fused()
        && x.rank() >= 2
        && w.rank() == 2
        && [x, w]
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `x·Wᵀ` of shape `(..., out)` for `x` of `(..., in)` and `W` of `(out, in)` through
/// [`sgemm`](super::sgemm), with its backward (see the module doc); the caller checks
/// [`handles`] first. One graph node whatever the rank of `x`: no reshapes around it, each of
/// which would cost backward a zero-filled gradient buffer and an addition.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear_with_grad_sink(x, w, None)
}

/// [`linear`], whose backward leaves `W`'s gradient in `sink` (keyed by `W`'s id) and hands
/// candle none for it, when a sink is given.
pub fn linear_with_grad_sink(
    x: &Tensor,
    w: &Tensor,
    sink: Option<&Arc<GradSink>>,
) -> Result<Tensor> {
    apply(x, w, sink, false)
}

/// [`linear_with_grad_sink`] as a node whose value is zeros: the product is not computed, the
/// backward is the linear's. For a product whose value nobody reads and that is only
/// backpropagated through (the last product of a checkpointed layer's recomputation).
pub fn linear_unread(x: &Tensor, w: &Tensor, sink: Option<&Arc<GradSink>>) -> Result<Tensor> {
    apply(x, w, sink, true)
}

fn apply(x: &Tensor, w: &Tensor, sink: Option<&Arc<GradSink>>, unread: bool) -> Result<Tensor> {
    if !handles(x, w) {
        bail!("gemm::linear takes an f32 CPU input of rank 2 or more and an f32 CPU matrix, with fused ops on");
    }
    let op = LinearOp {
        weight_grad_sink: sink.map(|sink| (sink.clone(), w.id())),
        unread,
    };
    let (x, w) = (row_major(x)?, row_major(w)?);
    x.apply_op2(&w, op)
}

/// `t` itself when [`view`] reads it as rows (a matrix whose rows are contiguous, or any
/// contiguous tensor), else a contiguous copy.
fn row_major(t: &Tensor) -> Result<Tensor> {
    let rows_contiguous = t.rank() == 2 && (t.dim(1)? <= 1 || t.layout().stride()[1] == 1);
    if rows_contiguous || t.is_contiguous() {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

/// A row-major f32 matrix view of a tensor `(..., cols)` as `rows × cols`: (values from its
/// first element, rows, cols, row distance).
fn view<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<(&'a [f32], usize, usize, usize)> {
    let CpuStorage::F32(values) = s else {
        bail!("gemm linear: {what} is not f32");
    };
    let dims = l.dims();
    let Some(&cols) = dims.last() else {
        bail!("gemm linear: {what} is a scalar");
    };
    let rows = dims[..dims.len() - 1].iter().product::<usize>();
    let ld = if dims.len() == 2 {
        let stride = l.stride();
        if cols > 1 && stride[1] != 1 {
            bail!("gemm linear: {what} rows are not contiguous");
        }
        if rows <= 1 {
            cols
        } else {
            stride[0]
        }
    } else if l.is_contiguous() {
        cols
    } else {
        bail!("gemm linear: {what} is not contiguous");
    };
    Ok((&values[l.start_offset()..], rows, cols, ld))
}

/// Runs `f` on the row-major view of a CPU tensor.
fn with_view<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce((&[f32], usize, usize, usize)) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(view(s, layout, what)?),
        _ => bail!("gemm linear: {what} is not on the CPU"),
    }
}

/// The op; with a sink, where `W`'s gradient goes and under which id; `unread`: the value is
/// zeros (see [`linear_unread`]).
struct LinearOp {
    weight_grad_sink: Option<(Arc<GradSink>, TensorId)>,
    unread: bool,
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "gemm-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, rows, in_dim, ldx) = view(s1, l1, "x")?;
        let (w, out, w_in, ldw) = view(s2, l2, "W")?;
        if w_in != in_dim {
            bail!("gemm linear: x has {in_dim} columns but W has {w_in}");
        }
        let y = if self.unread {
            vec![0f32; rows * out]
        } else {
            product(
                rows,
                out,
                in_dim,
                Operand::plain(x, ldx),
                Operand::transposed(w, ldw),
            )?
        };
        crate::model::ops::count_fused_call();
        let mut dims = l1.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = row_major(grad)?;
        let dx = if x.track_op() {
            Some(with_view(&grad, "gradient", |(g, rows, out, ldg)| {
                with_view(w, "W", |(w, _, in_dim, ldw)| {
                    let dx = product(
                        rows,
                        in_dim,
                        out,
                        Operand::plain(g, ldg),
                        Operand::plain(w, ldw),
                    )?;
                    debug_assert_eq!(rows * in_dim, x.elem_count());
                    Tensor::from_vec(dx, x.shape(), x.device())
                })
            })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(with_view(&grad, "gradient", |(g, rows, out, ldg)| {
                with_view(x, "x", |(x, _, in_dim, ldx)| {
                    let dw = product(
                        out,
                        in_dim,
                        rows,
                        Operand::transposed(g, ldg),
                        Operand::plain(x, ldx),
                    )?;
                    Tensor::from_vec(dw, (out, in_dim), w.device())
                })
            })?)
        } else {
            None
        };
        let dw = match (dw, &self.weight_grad_sink) {
            (Some(dw), Some((sink, id))) => {
                sink.add(*id, dw)?;
                None
            }
            (dw, _) => dw,
        };
        Ok((dx, dw))
    }
}
