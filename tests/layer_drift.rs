//! Per-layer drift on tiny models against hand computation: the study's measure (each model's
//! own unembedding, per-sample mean) and the pooled base-unembedding measure of earlier builds,
//! where they agree and where they differ; and old run directories still read.

mod common;

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};
use common::TinyModel;
use tunescope::eval::drift::{
    layer_drift, layer_drift_both, layer_drift_pooled, mean_per_sample, mean_pooled, LayerDrift,
};
use tunescope::eval::probe::{ProbeOptions, ProbePrompt};
use tunescope::model::decoder::Inputs;
use tunescope::model::{Architecture, Decoder, Model};
use tunescope::run::{Record, RecordLog};

fn prompt(ids: &[u32]) -> ProbePrompt {
    ProbePrompt {
        text: String::new(),
        ids: ids.to_vec(),
        pixel_values: Vec::new(),
    }
}

/// Two prompts with answers of unequal length (3 tokens and 1).
fn samples() -> (Vec<ProbePrompt>, Vec<Vec<u32>>) {
    (
        vec![prompt(&[5, 17, 9, 30]), prompt(&[8, 2, 41])],
        vec![vec![12, 7, 19], vec![33]],
    )
}

fn options() -> ProbeOptions {
    ProbeOptions {
        batch_size: 2,
        ..Default::default()
    }
}

/// By hand, one sample at a time: per layer, per block, per answer token,
/// ‖W_now·h_now − W_base·h_base‖₂ with `w_now`, `w_base` `(V, H)` given.
fn by_hand(
    base: &Decoder,
    current: &Decoder,
    w_base: &Tensor,
    w_now: &Tensor,
) -> Vec<[Vec<Vec<f64>>; 2]> {
    let (prompts, answers) = samples();
    let layers = base.config().num_hidden_layers;
    let mut out: Vec<[Vec<Vec<f64>>; 2]> = vec![[Vec::new(), Vec::new()]; layers];
    let wb: Vec<Vec<f32>> = w_base.to_vec2().unwrap();
    let wn: Vec<Vec<f32>> = w_now.to_vec2().unwrap();
    for (p, a) in prompts.iter().zip(&answers) {
        let seq: Vec<u32> = [p.ids.clone(), a.clone()].concat();
        let ids = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = ids.ones_like().unwrap();
        let run = |d: &Decoder| d.block_outputs(&Inputs::text(&ids, Some(&mask))).unwrap();
        let (ob, on) = (run(base), run(current));
        for layer in 0..layers {
            let blocks = [(&ob[layer].0, &on[layer].0), (&ob[layer].1, &on[layer].1)];
            for (block, (b, n)) in blocks.into_iter().enumerate() {
                let b: Vec<Vec<f32>> = b.squeeze(0).unwrap().to_vec2().unwrap();
                let n: Vec<Vec<f32>> = n.squeeze(0).unwrap().to_vec2().unwrap();
                let tokens = (p.ids.len()..seq.len())
                    .map(|t| {
                        let sq: f64 = (0..wb.len())
                            .map(|v| {
                                let dot = |w: &[f32], h: &[f32]| -> f64 {
                                    w.iter().zip(h).map(|(x, y)| *x as f64 * *y as f64).sum()
                                };
                                (dot(&wn[v], &n[t]) - dot(&wb[v], &b[t])).powi(2)
                            })
                            .sum();
                        sq.sqrt()
                    })
                    .collect();
                out[layer][block].push(tokens);
            }
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1e-3)
}

fn decoder(tiny: &TinyModel, trainable: &[&str]) -> Decoder {
    let model = Model::open(&tiny.spec_str()).unwrap();
    let names: HashSet<String> = trainable.iter().map(|s| s.to_string()).collect();
    model.decoder(&names, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn nothing_trained_is_zero_drift() {
    let tiny = TinyModel::new(Architecture::Qwen2, 31);
    let current = decoder(&tiny, &["model.layers.0.mlp.up_proj.weight"]);
    let base = current.frozen_snapshot().unwrap();
    let (prompts, answers) = samples();
    let (own, pooled) = layer_drift_both(&base, &current, &prompts, &answers, &options()).unwrap();
    assert_eq!(own.len(), base.config().num_hidden_layers);
    for d in own.iter().chain(&pooled) {
        assert_eq!((d.attn, d.mlp), (0.0, 0.0), "{d:?}");
    }
}

#[test]
fn a_trained_lm_head_moves_the_study_measure_only() {
    // Doubling lm_head leaves every block output as it was: the pooled measure (base
    // unembedding for both) sees nothing, the study's sees ‖2W·h − W·h‖ = ‖W·h‖.
    let tiny = TinyModel::new(Architecture::Llama, 32);
    let current = decoder(&tiny, &["lm_head.weight"]);
    let base = current.frozen_snapshot().unwrap();
    let var = &current.vars()["lm_head.weight"];
    var.set(&(var.as_tensor() * 2.0).unwrap()).unwrap();
    let (prompts, answers) = samples();
    let own = layer_drift(&base, &current, &prompts, &answers, &options()).unwrap();
    let pooled = layer_drift_pooled(&base, &current, &prompts, &answers, &options()).unwrap();
    let hand = by_hand(&base, &current, base.unembedding(), current.unembedding());
    for (layer, [attn, mlp]) in hand.iter().enumerate() {
        assert_eq!((pooled[layer].attn, pooled[layer].mlp), (0.0, 0.0));
        let expected = (mean_per_sample(attn), mean_per_sample(mlp));
        println!("layer {layer}: own {:?}, by hand {expected:?}", own[layer]);
        assert!(expected.0 > 0.0 && expected.1 > 0.0);
        assert!(close(own[layer].attn, expected.0) && close(own[layer].mlp, expected.1));
    }
}

#[test]
fn per_sample_and_pooled_averaging_differ_on_unequal_answers() {
    // A moved MLP with a frozen unembedding: per token the two measures are the same size, so
    // they differ only by how they average over the 3-token and the 1-token answer.
    let tiny = TinyModel::new(Architecture::Llama, 33);
    let name = "model.layers.0.mlp.down_proj.weight";
    let current = decoder(&tiny, &[name]);
    let base = current.frozen_snapshot().unwrap();
    let var = &current.vars()[name];
    var.set(&(var.as_tensor() * 1.5).unwrap()).unwrap();
    let (prompts, answers) = samples();
    let (own, pooled) = layer_drift_both(&base, &current, &prompts, &answers, &options()).unwrap();
    let w = base.unembedding();
    let hand = by_hand(&base, &current, w, w);
    let mut differ = false;
    for (layer, [attn, mlp]) in hand.iter().enumerate() {
        let expect = |f: fn(&[Vec<f64>]) -> f64| (f(attn), f(mlp));
        let (own_hand, pooled_hand) = (expect(mean_per_sample), expect(mean_pooled));
        println!(
            "layer {layer}: own {:?} ~ {own_hand:?}; pooled {:?} ~ {pooled_hand:?}",
            own[layer], pooled[layer]
        );
        assert!(close(own[layer].mlp, own_hand.1) && close(own[layer].attn, own_hand.0));
        assert!(close(pooled[layer].mlp, pooled_hand.1));
        assert!(close(pooled[layer].attn, pooled_hand.0));
        differ |= (own_hand.1 - pooled_hand.1).abs() > 1e-3 * own_hand.1;
    }
    assert!(differ, "the averaging should tell the measures apart");
    assert!(
        own[0].mlp > 0.0 && own[0].attn == 0.0,
        "layer 0 attention is upstream"
    );
}

#[test]
fn old_layer_drift_records_read_as_the_pooled_measure() {
    let old = r#"{"kind":"layer_drift","step":4,"layers":[{"layer":0,"attn":0.5,"mlp":1.0}]}"#;
    let new = Record::LayerDrift {
        step: 6,
        layers: vec![LayerDrift {
            layer: 0,
            attn: 0.25,
            mlp: 2.0,
        }],
    };
    let line = serde_json::to_string(&new).unwrap();
    assert!(line.contains(r#""kind":"layer_drift_own""#), "{line}");
    let log = RecordLog::parse(&format!("{old}\n{line}\n"));
    assert_eq!(log.records.len(), 2);
    assert!(
        matches!(&log.records[0], Record::LayerDriftPooled { step: 4, layers } if layers[0].mlp == 1.0)
    );
    assert_eq!(log.records[0].kind(), "layer_drift");
    assert_eq!(log.records[1], new);

    // The dashboard's snapshot: an old run shows its pooled drift; once the study's measure
    // is there, a pooled record no longer replaces it.
    let dir = tempfile::tempdir().unwrap();
    let run = tunescope::run::RunDir::open_or_init(dir.path()).unwrap();
    std::fs::write(run.metrics_path(), format!("{old}\n")).unwrap();
    let mut reader = tunescope::run::reader::RunReader::new(run.clone());
    reader.refresh();
    assert_eq!(reader.snapshot().layer_drift[0].mlp, 1.0);
    std::fs::write(run.metrics_path(), format!("{old}\n{line}\n{old}\n")).unwrap();
    let mut reader = tunescope::run::reader::RunReader::new(run);
    reader.refresh();
    assert_eq!(reader.snapshot().layer_drift[0].mlp, 2.0);
}
