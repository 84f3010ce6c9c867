//! Reading both config generations, refusing what the decoder does not compute, and showing
//! where every value came from.

use serde_json::{json, Value};

use super::*;

fn base() -> Value {
    json!({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 128,
    })
}

fn with(extra: Value) -> Result<ModelConfig> {
    let mut v = base();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    ModelConfig::from_json(&v)
}

fn source<'a>(c: &'a ModelConfig, name: &str) -> &'a ValueSource {
    c.sources.iter().find(|s| s.name == name).unwrap()
}

/// The failure that started this: a transformers 5 config (SmolLM2 saved by 5.x) has its base
/// only inside `rope_parameters`; it used to load with 10000.
#[test]
fn rope_theta_is_read_from_rope_parameters() {
    let c = with(json!({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "dtype": "bfloat16"})).unwrap();
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.rope_scaling, None);
    assert_eq!(
        source(&c, "rope theta").source,
        "rope_parameters.rope_theta"
    );
    assert_eq!(c.saved_dtype.as_deref(), Some("bfloat16"));
    let legacy = with(json!({"rope_theta": 100000.0, "torch_dtype": "bfloat16"})).unwrap();
    assert_eq!(legacy.rope_theta, 100000.0);
    assert_eq!(legacy.saved_dtype.as_deref(), Some("bfloat16"));
}

#[test]
fn rope_parameters_keyed_by_layer_type() {
    let set = json!({"rope_theta": 5e5, "rope_type": "linear", "factor": 2.0});
    let c = with(json!({"layer_types": ["full_attention", "full_attention"], "rope_parameters": {"full_attention": set, "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}})).unwrap();
    assert_eq!(c.rope_theta, 5e5);
    assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
    let err = with(
        json!({"model_type": "qwen2", "use_sliding_window": true, "sliding_window": 4, "max_window_layers": 0, "layer_types": ["sliding_attention", "sliding_attention"],
        "rope_parameters": {"full_attention": set, "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}}),
    );
    assert!(err.is_ok(), "only the types in use count: {err:?}");
    let mixed = with(
        json!({"model_type": "qwen2", "use_sliding_window": true, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]}),
    );
    let msg = format!("{:#}", mixed.unwrap_err());
    assert!(msg.contains("per-layer windows"), "{msg}");
}

#[test]
fn every_rope_type_is_computed_or_refused_by_name() {
    for (kind, extra) in [
        ("linear", json!({"factor": 2.0})),
        ("dynamic", json!({"factor": 2.0})),
        (
            "llama3",
            json!({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        ),
        (
            "yarn",
            json!({"factor": 4.0, "original_max_position_embeddings": 32}),
        ),
    ] {
        let mut set = extra.clone();
        set["rope_type"] = json!(kind);
        set["rope_theta"] = json!(1e4);
        let c = with(json!({"rope_parameters": set})).unwrap();
        assert_eq!(c.rope_scaling.as_ref().unwrap().name(), kind);
        let mut legacy = extra;
        legacy["type"] = json!(kind);
        let l = with(json!({"rope_theta": 1e4, "rope_scaling": legacy})).unwrap();
        assert_eq!(l.rope_scaling, c.rope_scaling, "{kind}");
    }
    for kind in ["longrope", "su", "mrope"] {
        let err =
            with(json!({"rope_parameters": {"rope_type": kind, "rope_theta": 1e4, "factor": 2.0}}))
                .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(kind) && msg.contains("not computed"), "{msg}");
    }
    let both = with(
        json!({"rope_parameters": {"rope_theta": 1e4}, "rope_scaling": {"type": "linear", "factor": 2.0}}),
    );
    assert!(format!("{:#}", both.unwrap_err()).contains("keep only"));
    let stray = with(
        json!({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0, "beta_fast": 3.0}}),
    );
    assert!(format!("{:#}", stray.unwrap_err()).contains("beta_fast"));
}

/// Hand values: yarn's attention factor 0.1·ln(4)+1, dynamic NTK's base growth past the context.
#[test]
fn scaled_frequencies_follow_transformers_formulas() {
    let yarn = with(json!({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0, "original_max_position_embeddings": 32}})).unwrap();
    assert!((yarn.rope_attention_scaling() - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
    let dynamic = with(
        json!({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}}),
    )
    .unwrap();
    let plain = with(json!({"rope_parameters": {"rope_theta": 1e4}})).unwrap();
    assert!(dynamic.rope_depends_on_length());
    assert_eq!(dynamic.rope_inv_freq_for_len(100), plain.rope_inv_freq());
    // Past 128 positions: base · (2·256/128 − 1)^(d/(d−2)) with d = 8.
    let grown = 1e4 * 3f64.powf(8.0 / 6.0);
    let want = 1.0 / (grown as f32).powf(2.0 / 8.0);
    assert!((dynamic.rope_inv_freq_for_len(256)[1] - want).abs() < 1e-6);
    let linear =
        with(json!({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}}))
            .unwrap();
    assert_eq!(linear.rope_inv_freq()[1], plain.rope_inv_freq()[1] / 2.0);
}

#[test]
fn keys_that_change_the_computation_are_refused_by_name() {
    for (key, value) in [
        ("attn_logit_softcapping", json!(50.0)),
        ("final_logit_softcapping", json!(30.0)),
        ("use_qk_norm", json!(true)),
        ("sliding_window_pattern", json!(6)),
        ("partial_rotary_factor", json!(0.5)),
        ("quantization_config", json!({"quant_method": "gptq"})),
        ("hidden_act", json!("gelu_pytorch_tanh")),
        ("attention_dropout", json!(0.1)),
        (
            "layer_types",
            json!(["full_attention", "chunked_attention"]),
        ),
    ] {
        let err = with(json!({key: value})).expect_err(key);
        assert!(format!("{err:#}").contains(key), "{key}: {err:#}");
    }
    // The same keys at values that leave the computation unchanged pass.
    let ok = with(
        json!({"final_logit_softcapping": null, "use_qk_norm": false, "partial_rotary_factor": 1.0, "attention_dropout": 0.0, "pretraining_tp": 1, "use_cache": true}),
    );
    assert!(ok.unwrap().warnings.is_empty());
}

#[test]
fn unknown_keys_warn_and_defaults_are_visible() {
    let c = with(json!({"frobnicate_heads": 3})).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("frobnicate_heads"));
    let theta = source(&c, "rope theta");
    assert!(
        theta.fallback && theta.source.starts_with("default"),
        "{theta:?}"
    );
    assert!(!source(&c, "rms_norm_eps").fallback);
    assert!(source(&c, "tie_word_embeddings").fallback);
    assert!(source(&c, "head_dim").fallback);
    // Family defaults are transformers', not one table for all: Mistral has 8 KV heads and a
    // 4096-token window when the keys are absent.
    let mut v = base();
    v["model_type"] = json!("mistral");
    v["num_attention_heads"] = json!(8);
    v.as_object_mut().unwrap().remove("num_key_value_heads");
    let m = ModelConfig::from_json(&v).unwrap();
    assert_eq!(m.num_key_value_heads, 8);
    assert_eq!(m.sliding_window, Some(4096));
    assert!(source(&m, "num_key_value_heads")
        .source
        .contains("MistralConfig"));
}

#[test]
fn qwen2_window_follows_use_sliding_window_and_max_window_layers() {
    let off =
        with(json!({"model_type": "qwen2", "sliding_window": 4, "use_sliding_window": false}))
            .unwrap();
    assert_eq!(off.sliding_window, None);
    let all = with(json!({"model_type": "qwen2", "sliding_window": 4, "use_sliding_window": true, "max_window_layers": 0})).unwrap();
    assert_eq!(all.sliding_window, Some(4));
    let none = with(json!({"model_type": "qwen2", "sliding_window": 4, "use_sliding_window": true, "max_window_layers": 2})).unwrap();
    assert_eq!(
        none.sliding_window, None,
        "layers from max_window_layers on slide: none here"
    );
    let half = with(
        json!({"model_type": "qwen2", "sliding_window": 4, "use_sliding_window": true, "max_window_layers": 1}),
    );
    assert!(half.is_err());
}

/// LLaVA: the keys of `vision_config` are classified too.
#[test]
fn llava_vision_config_keys_are_classified() {
    let llava = |extra: Value| {
        let mut vision = json!({"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 16, "patch_size": 8, "hidden_act": "quick_gelu",
            "projection_dim": 16, "dropout": 0.0});
        for (k, x) in extra.as_object().unwrap() {
            vision[k] = x.clone();
        }
        ModelConfig::from_json(&json!({"model_type": "llava", "text_config": base(),
            "vision_config": vision, "image_token_index": 5}))
    };
    assert!(llava(json!({})).unwrap().warnings.is_empty());
    let warned = llava(json!({"use_frobnicator": true})).unwrap();
    assert!(
        warned
            .warnings
            .iter()
            .any(|w| w.contains("vision_config.use_frobnicator")),
        "{:?}",
        warned.warnings
    );
    let refused = llava(json!({"attention_dropout": 0.1})).unwrap_err();
    assert!(format!("{refused:#}").contains("vision_config.attention_dropout"));
}
