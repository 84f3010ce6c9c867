//! One optimizer step, the same for the trainer and `bench`: the forward and backward of each
//! micro-batch with gradients summed over them, then the row masks of partly trained fused
//! tensors, global-norm clipping and the AdamW update.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::loss::{label_positions, labelled_logits, summed_nll_with_images};
use super::optimizer::AdamW;
use super::regularize::Lwf;
use crate::data::Batch;
use crate::model::Decoder;

/// Seconds spent in each phase of a step (the device is synchronised between phases only when
/// the step is [`StepOptions::timed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTimes {
    /// Forward passes and the loss.
    pub forward: f64,
    /// Backward passes and gradient accumulation.
    pub backward: f64,
    /// Clipping and the optimizer update.
    pub update: f64,
}

/// How a step runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOptions {
    /// Clip the global gradient norm to this value.
    pub max_grad_norm: Option<f64>,
    /// Synchronise the device after each phase so that [`PhaseTimes`] are exact.
    pub timed: bool,
    /// Fail when a trainable parameter gets no gradient from a micro-batch that can reach it
    /// (the first with images for a vision-language model); the trainer checks once per run.
    pub check_grads: bool,
}

/// What a finished step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean loss per labelled token over the step's micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Labelled tokens and attended tokens in the step.
    pub labels: usize,
    pub tokens: usize,
    pub times: PhaseTimes,
    /// Whether the gradient check ran (and passed) in this step.
    pub grads_checked: bool,
    /// With LwF: T²·KL(teacher ‖ student) per labelled token over the step (before λ).
    pub lwf_kl: Option<f64>,
}

/// A step either updates the weights or stops before touching them.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Updated(StepReport),
    /// The loss or the gradient norm was not finite; the weights are unchanged.
    NotFinite(String),
}

/// Runs one optimizer step over `batches` (the micro-batches of one accumulation) at `lr`.
pub fn optimizer_step(
    decoder: &Decoder,
    optimizer: &mut AdamW,
    batches: &[Batch],
    lr: f64,
    options: StepOptions,
) -> Result<StepOutcome> {
    regularized_step(decoder, optimizer, batches, lr, options, None)
}

/// [`optimizer_step`] with a regularizer: the loss of each micro-batch gets λ·(its LwF term)
/// at the same labelled positions as the NLL, both divided by the step's labelled tokens.
pub fn regularized_step(
    decoder: &Decoder,
    optimizer: &mut AdamW,
    batches: &[Batch],
    lr: f64,
    options: StepOptions,
    regularizer: Option<&Lwf>,
) -> Result<StepOutcome> {
    let device = decoder.device();
    let sync = |on: bool| -> Result<()> {
        if on {
            device.synchronize()?;
        }
        Ok(())
    };
    let labels: usize = batches.iter().map(Batch::label_count).sum();
    let tokens: usize = batches.iter().map(Batch::token_count).sum();
    let label_total = labels.max(1) as f64;
    let mut times = PhaseTimes::default();
    let mut loss_sum = 0f64;
    let mut kl_sum = regularizer.map(|_| 0f64);
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    let mut grads_checked = false;
    for (micro, batch) in batches.iter().enumerate() {
        let start = Instant::now();
        let (ids, _labels, mask) = batch.to_tensors(device)?;
        let images = batch.images(device)?;
        // Training mode (LoRA dropout, seeded by the step) for the student's forward only.
        let training = decoder.training(optimizer.step, micro);
        let (loss, value) = match regularizer {
            None => {
                let loss = (summed_nll_with_images(
                    decoder,
                    &ids,
                    &mask,
                    &batch.labels,
                    images.as_ref(),
                )? / label_total)?;
                let value = loss.to_scalar::<f32>()? as f64;
                (loss, value)
            }
            Some(lwf) => {
                let (nll, kl) = nll_and_kl(decoder, lwf, &ids, &mask, batch, images.as_ref())?;
                let nll = (nll / label_total)?;
                let value = nll.to_scalar::<f32>()? as f64;
                let kl_value = kl.to_scalar::<f32>()? as f64 / label_total;
                if !kl_value.is_finite() {
                    return Ok(StepOutcome::NotFinite(format!("LwF KL is {kl_value}")));
                }
                if let Some(sum) = kl_sum.as_mut() {
                    *sum += kl_value;
                }
                ((&nll + (kl * (lwf.lambda() / label_total))?)?, value)
            }
        };
        drop(training);
        sync(options.timed)?;
        times.forward += start.elapsed().as_secs_f64();
        if !value.is_finite() {
            return Ok(StepOutcome::NotFinite(format!("loss is {value}")));
        }
        loss_sum += value;

        let start = Instant::now();
        let store = loss.backward()?;
        let step_grads = decoder.trainable_grads(&store)?;
        drop(store);
        // A batch without images leaves the vision side without gradients.
        let reaches_all = decoder.vision().is_none() || !batch.pixel_values.is_empty();
        if options.check_grads && !grads_checked && reaches_all {
            decoder.check_all_trainable_have_grads(&step_grads)?;
            grads_checked = true;
        }
        for (name, g) in step_grads {
            let g = g.to_dtype(DType::F32)?;
            // The step's sum is its own (fresh gradients, their store dropped): added in place.
            let sum = match grads.remove(&name) {
                Some(acc) => crate::model::ops::add_in_place(acc, &g)?,
                None => g,
            };
            grads.insert(name, sum);
        }
        sync(options.timed)?;
        times.backward += start.elapsed().as_secs_f64();
    }

    let start = Instant::now();
    // Fused tensors trained in part (Phi-3): the other rows get no gradient, so AdamW (without
    // weight decay, checked at start) leaves them bit-identical.
    for (name, mask) in decoder.row_masks() {
        if let Some(g) = grads.get_mut(name) {
            *g = g.broadcast_mul(&mask.to_dtype(g.dtype())?)?;
        }
    }
    let grad_norm = global_norm(&grads)?;
    if !grad_norm.is_finite() {
        return Ok(StepOutcome::NotFinite(format!(
            "gradient norm is {grad_norm}"
        )));
    }
    // Clipping scales the gradients inside the optimizer's pass.
    let grad_scale = match options.max_grad_norm {
        Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
        _ => 1.0,
    };
    optimizer.update_scaled(&grads, lr, grad_scale)?;
    sync(options.timed)?;
    times.update = start.elapsed().as_secs_f64();
    Ok(StepOutcome::Updated(StepReport {
        loss: loss_sum,
        grad_norm,
        labels,
        tokens,
        times,
        grads_checked,
        lwf_kl: kl_sum,
    }))
}

/// The summed NLL and the summed LwF term (T²·Σ KL) of one micro-batch, from one student
/// forward; both are zero when nothing is labelled. The teacher runs first, so its activations
/// never sit beside the student's graph.
fn nll_and_kl(
    decoder: &Decoder,
    lwf: &Lwf,
    ids: &Tensor,
    mask: &Tensor,
    batch: &Batch,
    images: Option<&crate::model::vlm::ImageBatch>,
) -> Result<(Tensor, Tensor)> {
    let inputs = crate::model::decoder::Inputs::text(ids, Some(mask)).with_images(images);
    let (positions, _) = label_positions(&batch.labels);
    let teacher = if positions.is_empty() {
        None
    } else {
        let index = Tensor::new(positions.as_slice(), decoder.device())?;
        Some(lwf.teacher_logits(&inputs, &index)?)
    };
    match (labelled_logits(decoder, &inputs, &batch.labels)?, teacher) {
        (Some(labelled), Some(teacher)) => Ok((
            crate::model::ops::cross_entropy_sum(&labelled.logits, &labelled.targets)?,
            lwf.kl_sum(&labelled.logits, &teacher)?,
        )),
        _ => {
            let zero = Tensor::zeros((), DType::F32, decoder.device())?;
            Ok((zero.clone(), zero))
        }
    }
}

/// √(Σ‖g‖²) over all gradients.
pub fn global_norm(grads: &HashMap<String, Tensor>) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.values() {
        total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}
