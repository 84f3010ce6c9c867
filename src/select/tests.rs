//! Unit tests of resolution on hand-built module maps.

use super::*;

/// A qwen2-like map: `layers` layers with q/k/v biases, tied embeddings, plus optional
/// vision tower and projector parameters.
fn map(layers: usize, vision: bool) -> ModuleMap {
    let mut e: Vec<(String, Vec<usize>, String)> = Vec::new();
    let mut add = |name: String, shape: &[usize]| e.push((name, shape.to_vec(), "F32".into()));
    add("model.embed_tokens.weight".into(), &[10, 4]);
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), &[4]);
        add(format!("{p}.post_attention_layernorm.weight"), &[4]);
        for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            add(format!("{p}.self_attn.{m}.weight"), &[4, 4]);
        }
        for m in ["q_proj", "k_proj", "v_proj"] {
            add(format!("{p}.self_attn.{m}.bias"), &[4]);
        }
        for m in ["gate_proj", "up_proj", "down_proj"] {
            add(format!("{p}.mlp.{m}.weight"), &[8, 4]);
        }
    }
    add("model.norm.weight".into(), &[4]);
    if vision {
        for l in 0..3 {
            add(
                format!("vision_tower.encoder.layers.{l}.fc.weight"),
                &[2, 2],
            );
        }
        add("multi_modal_projector.linear.weight".into(), &[4, 2]);
        add("multi_modal_projector.linear.bias".into(), &[4]);
    }
    ModuleMap::from_entries(e)
}

fn names(sel: &Selection) -> Vec<&str> {
    sel.names.iter().map(String::as_str).collect()
}

fn err(spec: &TrainableSpec, m: &ModuleMap) -> String {
    format!("{:#}", resolve(spec, m).unwrap_err())
}

#[test]
fn attn_follows_biases_and_counts() {
    let m = map(2, false);
    let sel = resolve(&TrainableSpec::from_kinds(&["attn"]), &m).unwrap();
    assert_eq!(sel.len(), 14);
    assert_eq!(sel.trainable_numel(&m), 2 * (4 * 16 + 3 * 4));
    assert_eq!(sel.numel_by_kind(&m)[&ParamKind::Q], 2 * 20);
    assert_eq!(
        sel.numel_by_layer(&m),
        [(0, 76), (1, 76)].into_iter().collect()
    );
    assert_eq!(sel.lowest_layer(&m), Some(0));
    assert!(sel.fraction(&m) > 0.0 && sel.fraction(&m) < 1.0);
    assert_eq!(sel.to_hash_set().len(), 14);
}

#[test]
fn kinds_are_case_and_separator_tolerant() {
    let m = map(2, false);
    let a = resolve(&TrainableSpec::from_kinds(&["Q, k v"]), &m).unwrap();
    let b = resolve(&TrainableSpec::from_kinds(&["q", "k", "v"]), &m).unwrap();
    assert_eq!(a, b);
}

#[test]
fn layer_filter_spares_unlayered_and_vision() {
    let m = map(4, true);
    let spec = TrainableSpec {
        kinds: vec!["norm".into(), "vision".into()],
        layers: Some(LayerSpec::parse("-1..").unwrap()),
        ..Default::default()
    };
    let sel = resolve(&spec, &m).unwrap();
    assert_eq!(
        names(&sel),
        vec![
            "model.layers.3.input_layernorm.weight",
            "model.layers.3.post_attention_layernorm.weight",
            "model.norm.weight",
            "vision_tower.encoder.layers.0.fc.weight",
            "vision_tower.encoder.layers.1.fc.weight",
            "vision_tower.encoder.layers.2.fc.weight",
        ]
    );
    assert_eq!(
        sel.lowest_layer(&m),
        None,
        "vision trains: graph starts at the bottom"
    );
}

#[test]
fn llm_alias_leaves_vision_out() {
    let m = map(1, true);
    let sel = resolve(&preset("full-llm").unwrap(), &m).unwrap();
    assert!(sel
        .names
        .iter()
        .all(|n| !n.starts_with("vision") && !n.starts_with("multi_modal")));
    assert_eq!(sel.len(), 1 + 2 + 4 + 3 + 3 + 1);
    assert_eq!(sel.lowest_layer(&m), None, "embeddings train");
    let sel = resolve(&preset("projector").unwrap(), &m).unwrap();
    assert_eq!(sel.len(), 2, "projector weight and bias");
}

#[test]
fn lowest_layer_none_when_only_top_trains() {
    let m = map(2, false);
    let sel = resolve(&TrainableSpec::from_kinds(&["norm"]), &m).unwrap();
    assert_eq!(sel.lowest_layer(&m), Some(0));
    let spec = TrainableSpec {
        include: vec!["model.norm.weight".into()],
        ..Default::default()
    };
    let sel = resolve(&spec, &m).unwrap();
    assert_eq!(sel.lowest_layer(&m), None);
}

#[test]
fn bias_rules() {
    let m = map(1, false);
    // Excluding a weight drops its bias too.
    let spec = TrainableSpec {
        kinds: vec!["q".into()],
        exclude: vec!["*.q_proj.weight".into()],
        ..Default::default()
    };
    assert!(err(&spec, &m).contains("the trainable selection is empty"));
    // A bias named by include stays without its weight, even with biases: false.
    let spec = TrainableSpec {
        include: vec!["*.k_proj.bias".into()],
        biases: false,
        ..Default::default()
    };
    assert_eq!(
        names(&resolve(&spec, &m).unwrap()),
        vec!["model.layers.0.self_attn.k_proj.bias"]
    );
    // A bias named by exclude stays out although its weight trains.
    let spec = TrainableSpec {
        kinds: vec!["q".into()],
        exclude: vec!["*.q_proj.bias".into()],
        ..Default::default()
    };
    assert_eq!(
        names(&resolve(&spec, &m).unwrap()),
        vec!["model.layers.0.self_attn.q_proj.weight"]
    );
    // A weight included by pattern brings its bias.
    let spec = TrainableSpec {
        include: vec!["re:.*v_proj\\.weight".into()],
        ..Default::default()
    };
    assert_eq!(resolve(&spec, &m).unwrap().len(), 2);
}

#[test]
fn error_messages() {
    let m = map(2, false);
    let e = err(&TrainableSpec::from_kinds(&["atn"]), &m);
    assert!(
        e.contains("unknown kind `atn`")
            && e.contains("did you mean `attn`")
            && e.contains("lm_head"),
        "{e}"
    );
    let e = err(&TrainableSpec::from_kinds(&["lm_head"]), &m);
    assert!(e.contains("ties") && e.contains("`embed`"), "{e}");
    let e = err(&TrainableSpec::from_kinds(&["vision"]), &m);
    assert!(
        e.contains("`vision` matches no parameter") && e.contains("closest parameter names"),
        "{e}"
    );
    let e = err(&TrainableSpec::default(), &m);
    assert!(e.contains("the trainable selection is empty"), "{e}");
    let spec = TrainableSpec {
        kinds: vec![String::new()],
        ..Default::default()
    };
    assert!(err(&spec, &m).contains("empty"));
}

#[test]
fn presets_resolve() {
    let m = map(2, true);
    for name in PRESETS {
        let spec = preset(name).unwrap_or_else(|| panic!("preset {name}"));
        assert!(spec.biases);
        resolve(&spec, &m).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    assert!(preset("nope").is_none());
    let up = resolve(&preset("mlp-gate-up").unwrap(), &m).unwrap();
    assert!(up.names.iter().all(|n| !n.contains("down_proj")));
    assert_eq!(up.len(), 4);
}

#[test]
fn yaml_kinds_may_be_one_string() {
    let spec: TrainableSpec = serde_yaml::from_str("kinds: q k, v\nlayers: 1\n").unwrap();
    assert_eq!(spec.kinds, vec!["q", "k", "v"]);
    assert_eq!(spec.layers.unwrap().to_string(), "1");
    assert!(spec.biases);
    let bad = serde_yaml::from_str::<TrainableSpec>("kinds: [q]\nlayer: 1\n")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("layer"), "{bad}");
    let bad = serde_yaml::from_str::<TrainableSpec>("layers: \"0..x\"\n")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("\"0..x\""), "{bad}");
}
