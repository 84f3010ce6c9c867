//! In-place arithmetic on tensors their caller owns alone (gradients being formed and summed):
//! `t ·= s` and `t += u` without a new buffer. A gradient the size of the vocabulary's
//! embedding (113 MiB for SmolLM2) then costs no second copy while it is scaled or summed.
//!
//! On the CPU in f32 the storage of `t` is written; other dtypes and devices get a new tensor.
//! Either way the result is returned, and callers use it instead of `t`: every other clone of
//! `t` (candle's tensors share storage) sees the CPU write, so `t` must not be shared.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Result, Tensor};

/// `t · s`, written into `t` where it can be (see the module doc).
pub fn scale_in_place(t: Tensor, s: f64) -> Result<Tensor> {
    if s == 1.0 {
        return Ok(t);
    }
    if writable(&t) {
        t.inplace_op1(&Scale(s as f32))?;
        Ok(t)
    } else {
        t.affine(s, 0.0)
    }
}

/// `t + u` (same shape), written into `t` where it can be (see the module doc); `u` must not
/// be a view of `t`'s storage.
pub fn add_in_place(t: Tensor, u: &Tensor) -> Result<Tensor> {
    if t.shape() != u.shape() {
        candle_core::bail!(
            "add_in_place: shapes {:?} and {:?} differ",
            t.dims(),
            u.dims()
        );
    }
    if writable(&t) && writable(u) && t.id() != u.id() {
        t.inplace_op2(u, &Add)?;
        Ok(t)
    } else {
        t + u
    }
}

/// An f32 CPU tensor laid out contiguously.
fn writable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous()
}

/// The contiguous f32 values of a storage (checked by [`writable`] before the op runs).
fn values_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("in-place op: the tensor is not contiguous f32"),
    }
}

struct Scale(f32);

impl InplaceOp1 for Scale {
    fn name(&self) -> &'static str {
        "scale-in-place"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        for v in values_mut(s, l)? {
            *v *= self.0;
        }
        Ok(())
    }
}

struct Add;

impl InplaceOp2 for Add {
    fn name(&self) -> &'static str {
        "add-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(u), Some((start, end))) = (s2, l2.contiguous_offsets()) else {
            candle_core::bail!("in-place op: the addend is not contiguous f32");
        };
        for (t, &u) in values_mut(s1, l1)?.iter_mut().zip(&u[start..end]) {
            *t += u;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn cpu_f32_tensors_are_written_in_place_others_copied() {
        let dev = Device::Cpu;
        let t = Tensor::new(&[1f32, -2.0, 4.0], &dev).unwrap();
        let alias = t.clone();
        let t = scale_in_place(t, 0.5).unwrap();
        let u = Tensor::new(&[10f32, 20.0, 30.0], &dev).unwrap();
        let t = add_in_place(t, &u).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![10.5, 19.0, 32.0]);
        // The alias shares the storage: written in place.
        assert_eq!(alias.to_vec1::<f32>().unwrap(), vec![10.5, 19.0, 32.0]);

        let t = Tensor::new(&[1f64, 2.0], &dev).unwrap();
        let alias = t.clone();
        let t = add_in_place(
            scale_in_place(t, 3.0).unwrap(),
            &Tensor::new(&[1f64, 1.0], &dev).unwrap(),
        )
        .unwrap();
        assert_eq!(t.to_vec1::<f64>().unwrap(), vec![4.0, 7.0]);
        assert_eq!(alias.to_vec1::<f64>().unwrap(), vec![1.0, 2.0]);
        assert_eq!(t.dtype(), DType::F64);
        assert!(add_in_place(t, &Tensor::new(&[1f64], &dev).unwrap()).is_err());
    }
}
