//! Learning without Forgetting (the study's LwF baseline, as its code runs it): the loss gets
//! λ·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) at the answer positions, the teacher being
//! the model at the start of the stage.
//!
//! Normalisation: the KL of each answer position is summed and divided by the step's labelled
//! token count, the same divisor as the NLL, so the term is the mean per answer token over the
//! step — the study's `F.kl_div(..., reduction='batchmean')` over its flattened answer rows
//! (per micro-batch there; per optimizer step here, as our NLL is).
//!
//! The teacher shares every frozen tensor with the student ([`Decoder::frozen_snapshot`]): it
//! costs one copy of the trainable tensors, not a second model.

use anyhow::Result;
use candle_core::{DType, Tensor, D};

use super::loss::logits_at;
use crate::model::decoder::Inputs;
use crate::model::Decoder;
use crate::recipe::{RegularizeMethod, RegularizeSpec};

/// The LwF term: its teacher, weight and temperature.
pub struct Lwf {
    teacher: Decoder,
    lambda: f64,
    temperature: f64,
}

impl Lwf {
    /// The regularizer of `spec` with `teacher`, the model at the start of the stage (a frozen
    /// snapshot taken before any update, and before a checkpoint is restored on resume).
    pub fn new(spec: &RegularizeSpec, teacher: Decoder) -> Self {
        match spec.method {
            RegularizeMethod::Lwf => Self {
                teacher,
                lambda: spec.lambda,
                temperature: spec.temperature,
            },
        }
    }

    /// The weight λ of the term in the loss.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// The teacher (every tensor frozen).
    pub fn teacher(&self) -> &Decoder {
        &self.teacher
    }

    /// The teacher's f32 logits `(N, V)` at the flat positions `index` of `inputs`, without
    /// gradient. The step computes them before the student's forward, so the teacher's
    /// activations are freed before the student's graph is built.
    pub fn teacher_logits(&self, inputs: &Inputs, index: &Tensor) -> Result<Tensor> {
        let hidden = self.teacher.hidden_states(inputs)?;
        Ok(logits_at(&self.teacher, &hidden, index)?.detach())
    }

    /// T²·Σ KL(teacher/T ‖ student/T) over the rows of the student's and the teacher's
    /// logits at the same positions.
    pub fn kl_sum(&self, student_logits: &Tensor, teacher_logits: &Tensor) -> Result<Tensor> {
        distill_kl_sum(student_logits, teacher_logits, self.temperature)
    }
}

/// T²·Σ_rows KL(softmax(teacher/T) ‖ softmax(student/T)) for logits `(N, V)`, an f32 scalar
/// tensor differentiable in `student` (its gradient is T·(p_student − p_teacher) per row).
pub fn distill_kl_sum(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let student = (student.to_dtype(DType::F32)? / temperature)?;
    let teacher = (teacher.to_dtype(DType::F32)?.detach() / temperature)?;
    let log_student = candle_nn::ops::log_softmax(&student, D::Minus1)?;
    let log_teacher = candle_nn::ops::log_softmax(&teacher, D::Minus1)?;
    let kl = (log_teacher.exp()? * (log_teacher - log_student)?)?.sum_all()?;
    Ok((kl * (temperature * temperature))?)
}

/// What the teacher costs in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TeacherMemory {
    /// Bytes the teacher holds of its own: the copy of the trainable tensors.
    pub copied: u64,
    /// Bytes a full second copy of the model would take.
    pub full_copy: u64,
}

impl TeacherMemory {
    /// From parameter counts (for `plan`, before weights are loaded): the trainable tensors
    /// and all tensors in the compute dtype.
    pub fn estimate(trainable: usize, total: usize, dtype_bytes: usize) -> Self {
        Self {
            copied: (trainable * dtype_bytes) as u64,
            full_copy: (total * dtype_bytes) as u64,
        }
    }

    /// Measured on the teacher and the student: the bytes of teacher tensors the student does
    /// not share, against the bytes of all the teacher's distinct tensors.
    pub fn measure(teacher: &Decoder, student: &Decoder) -> Self {
        let shared: std::collections::HashSet<_> =
            student.params().values().map(|p| p.tensor().id()).collect();
        let mut seen = std::collections::HashSet::new();
        let (mut copied, mut full_copy) = (0u64, 0u64);
        for param in teacher.params().values() {
            let t = param.tensor();
            if !seen.insert(t.id()) {
                continue;
            }
            let bytes = (t.elem_count() * t.dtype().size_in_bytes()) as u64;
            full_copy += bytes;
            if !shared.contains(&t.id()) {
                copied += bytes;
            }
        }
        Self { copied, full_copy }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    #[test]
    fn kl_matches_a_hand_computed_case() {
        // teacher/T = [0, ln 3] → p = [1/4, 3/4]; student [0, 0] → q = [1/2, 1/2].
        let t = 2.0;
        let teacher = Tensor::new(&[[0f32, (2.0 * 3f64.ln()) as f32]], &Device::Cpu).unwrap();
        let student = Tensor::new(&[[0f32, 0.0]], &Device::Cpu).unwrap();
        let expected = t * t * (0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln());
        let got = scalar(&distill_kl_sum(&student, &teacher, t).unwrap());
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        // Rows add up, and the KL of a distribution with itself is 0.
        let two = Tensor::cat(&[&student, &teacher], 0).unwrap();
        let teachers = Tensor::cat(&[&teacher, &teacher], 0).unwrap();
        let got = scalar(&distill_kl_sum(&two, &teachers, t).unwrap());
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn gradient_matches_finite_differences_and_the_closed_form() {
        let t = 2.0;
        let values: Vec<f32> = vec![0.3, -1.2, 2.0, 0.5, 0.0, 1.1, -0.4, 0.9, -2.0, 0.2];
        let teacher_values: Vec<f32> = vec![1.0, 0.1, -0.3, 0.7, 2.2, -1.0, 0.0, 0.4, 0.8, -0.6];
        let teacher = Tensor::from_vec(teacher_values, (2, 5), &Device::Cpu).unwrap();
        let student = Var::from_vec(values.clone(), (2, 5), &Device::Cpu).unwrap();
        let loss = distill_kl_sum(student.as_tensor(), &teacher, t).unwrap();
        let grads = loss.backward().unwrap();
        let grad: Vec<f32> = grads
            .get(student.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Closed form: T·(softmax(s/T) − softmax(t/T)).
        let ps = candle_nn::ops::softmax_last_dim(&(student.as_tensor() / t).unwrap()).unwrap();
        let pt = candle_nn::ops::softmax_last_dim(&(&teacher / t).unwrap()).unwrap();
        let closed: Vec<f32> = ((ps - pt).unwrap() * t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let eps = 1e-2f32;
        for i in 0..values.len() {
            let eval = |delta: f32| {
                let mut x = values.clone();
                x[i] += delta;
                let s = Tensor::from_vec(x, (2, 5), &Device::Cpu).unwrap();
                scalar(&distill_kl_sum(&s, &teacher, t).unwrap())
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            let analytic = grad[i] as f64;
            assert!(
                (numeric - analytic).abs() < 1e-3 * analytic.abs().max(0.05),
                "[{i}] analytic {analytic} numeric {numeric}"
            );
            assert!(
                (closed[i] as f64 - analytic).abs() < 1e-6,
                "[{i}] closed form"
            );
        }
    }

    #[test]
    fn estimate_counts_trainable_against_all() {
        let m = TeacherMemory::estimate(10, 1000, 2);
        assert_eq!((m.copied, m.full_copy), (20, 2000));
    }
}
