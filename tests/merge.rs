//! `tunescope merge`: WiSE-FT interpolation reproduces each model bit for bit at α 0 and 1,
//! gives the hand-computed mix in between, and refuses models whose tensors differ.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use common::{bytes_of, load_tensors, TinyModel};
use tunescope::merge::{interpolate, interpolate_to};
use tunescope::model::tiny::TinySpec;
use tunescope::model::Architecture;

#[test]
fn interpolation_at_zero_and_one_reproduces_each_model_exactly() {
    let a = TinyModel::new(Architecture::Qwen2, 1);
    let b = TinyModel::new(Architecture::Qwen2, 2);
    let tmp = tempfile::tempdir().unwrap();
    let ta = load_tensors(&a.path().join("model.safetensors"));
    let tb = load_tensors(&b.path().join("model.safetensors"));
    for (alpha, want) in [(0.0, &ta), (1.0, &tb)] {
        let out = tmp.path().join(format!("m{alpha}"));
        interpolate_to(&a.spec_str(), &b.spec_str(), alpha, &out).unwrap();
        let got = load_tensors(&out.join("model.safetensors"));
        assert_eq!(got.len(), want.len());
        for (name, t) in want {
            assert_eq!(bytes_of(&got[name]), bytes_of(t), "α {alpha}: {name}");
        }
        for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            assert!(out.join(file).is_file(), "{file}");
        }
    }
    // α 0.25: 0.75·A + 0.25·B, element by element.
    let out = tmp.path().join("quarter");
    interpolate_to(&a.spec_str(), &b.spec_str(), 0.25, &out).unwrap();
    let got = load_tensors(&out.join("model.safetensors"));
    let name = "model.layers.0.mlp.up_proj.weight";
    let x = ta[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let y = tb[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let z = got[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for i in 0..x.len() {
        assert!((z[i] - (0.75 * x[i] + 0.25 * y[i])).abs() <= 1e-6, "{i}");
    }
}

#[test]
fn negative_zero_and_bf16_stay_bit_exact_at_the_ends() {
    let dev = Device::Cpu;
    let a: BTreeMap<String, Tensor> = [(
        "w".to_string(),
        Tensor::new(&[-0.0f32, 1.5, -2.25], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap(),
    )]
    .into();
    let b: BTreeMap<String, Tensor> = [(
        "w".to_string(),
        Tensor::new(&[0.5f32, -0.0, 3.0], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap(),
    )]
    .into();
    // bf16 → f32 is exact, so equal f32 bytes mean equal bf16 bits (the sign of zero included).
    let bits = |t: &Tensor| {
        assert_eq!(t.dtype(), DType::BF16);
        bytes_of(&t.to_dtype(DType::F32).unwrap())
    };
    assert_eq!(bits(&interpolate(&a, &b, 0.0).unwrap()["w"]), bits(&a["w"]));
    assert_eq!(bits(&interpolate(&a, &b, 1.0).unwrap()["w"]), bits(&b["w"]));
    let half = interpolate(&a, &b, 0.5).unwrap()["w"]
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(half, vec![0.25, 0.75, 0.375]);
}

#[test]
fn models_with_different_tensors_are_refused_by_name() {
    let a = TinyModel::new(Architecture::Llama, 1);
    let mut spec = TinySpec::new(Architecture::Llama, 2);
    spec.num_layers = 3;
    let b = TinyModel::with_spec(spec);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let err = interpolate_to(&a.spec_str(), &b.spec_str(), 0.5, &out).unwrap_err();
    assert!(format!("{err:#}").contains("model.layers.2."), "{err:#}");
    assert!(!out.exists());

    let dev = Device::Cpu;
    let one = |shape: &[usize]| -> BTreeMap<String, Tensor> {
        [(
            "x".to_string(),
            Tensor::zeros(shape, DType::F32, &dev).unwrap(),
        )]
        .into()
    };
    let err = interpolate(&one(&[2, 3]), &one(&[3, 2]), 0.5).unwrap_err();
    assert!(err.to_string().contains("tensor x has shape"), "{err}");
}
