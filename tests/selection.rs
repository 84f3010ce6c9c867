//! Resolving `trainable:` specs against generated tiny models.

use std::collections::BTreeSet;

use tunescope::model::module_map::ModuleMap;
use tunescope::model::tiny::{make_tiny, TinySpec};
use tunescope::model::{Architecture, Model, ParamKind};
use tunescope::select::{preset, resolve, LayerSpec, Selection, TrainableSpec, PRESETS};

/// The module map of a freshly generated tiny model with `layers` layers.
fn tiny_map(arch: Architecture, layers: usize) -> ModuleMap {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spec = TinySpec::new(arch, 7);
    spec.num_layers = layers;
    make_tiny(&spec, dir.path()).expect("make tiny model");
    Model::open(&dir.path().to_string_lossy())
        .expect("open tiny model")
        .module_map()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

fn attn_names(layer: usize, with_bias: bool) -> Vec<String> {
    let mut out: Vec<String> = ["q", "k", "v", "o"]
        .iter()
        .map(|m| format!("model.layers.{layer}.self_attn.{m}_proj.weight"))
        .collect();
    if with_bias {
        out.extend(
            ["q", "k", "v"]
                .iter()
                .map(|m| format!("model.layers.{layer}.self_attn.{m}_proj.bias")),
        );
    }
    out
}

fn mlp_names(layer: usize, which: &[&str]) -> Vec<String> {
    which
        .iter()
        .map(|m| format!("model.layers.{layer}.mlp.{m}_proj.weight"))
        .collect()
}

fn run(spec: &TrainableSpec, map: &ModuleMap) -> Selection {
    resolve(spec, map).unwrap_or_else(|e| panic!("resolve failed: {e:#}"))
}

fn fail(spec: &TrainableSpec, map: &ModuleMap) -> String {
    format!("{:#}", resolve(spec, map).expect_err("resolve should fail"))
}

fn with_layers(kinds: &[&str], layers: LayerSpec) -> TrainableSpec {
    TrainableSpec {
        layers: Some(layers),
        ..TrainableSpec::from_kinds(kinds)
    }
}

#[test]
fn qwen2_presets_select_exact_sets() {
    let map = tiny_map(Architecture::Qwen2, 2);
    assert_eq!(
        map.params.len(),
        26,
        "embed + 2 x 12 + final norm, tied head"
    );

    let sel = run(&preset("sa-proj").unwrap(), &map);
    let want: Vec<String> = (0..2).flat_map(|l| attn_names(l, true)).collect();
    assert_eq!(sel.names, set(&want));
    assert_eq!(sel.len(), 14);

    let sel = run(&preset("sa-qkv").unwrap(), &map);
    assert_eq!(sel.len(), 12);
    assert!(sel.names.iter().all(|n| !n.contains("o_proj")));

    let sel = run(&preset("mlp-gate-up").unwrap(), &map);
    let want: Vec<String> = (0..2).flat_map(|l| mlp_names(l, &["gate", "up"])).collect();
    assert_eq!(sel.names, set(&want));

    let sel = run(&preset("mlp-down").unwrap(), &map);
    let want: Vec<String> = (0..2).flat_map(|l| mlp_names(l, &["down"])).collect();
    assert_eq!(sel.names, set(&want));

    let sel = run(&preset("sa-proj+gate-up").unwrap(), &map);
    assert_eq!(sel.len(), 14 + 4);

    let sel = run(&preset("full-llm").unwrap(), &map);
    let every: BTreeSet<String> = map.params.iter().map(|p| p.name.clone()).collect();
    assert_eq!(sel.names, every);
    assert_eq!(sel.trainable_numel(&map), map.total());
    assert_eq!(sel.fraction(&map), 1.0);
    assert_eq!(sel.lowest_layer(&map), None);
    assert_eq!(sel.numel_by_kind(&map), map.totals_by_kind());
    assert_eq!(sel.numel_by_layer(&map), map.totals_by_layer());
}

#[test]
fn llama_has_no_biases_and_an_lm_head() {
    let map = tiny_map(Architecture::Llama, 2);
    assert_eq!(map.params.len(), 21);
    let sel = run(&preset("sa-proj").unwrap(), &map);
    let want: Vec<String> = (0..2).flat_map(|l| attn_names(l, false)).collect();
    assert_eq!(sel.names, set(&want));

    let sel = run(&TrainableSpec::from_kinds(&["lm_head"]), &map);
    assert_eq!(sel.names, set(&["lm_head.weight".to_string()]));
    assert_eq!(sel.lowest_layer(&map), None);
    assert_eq!(
        sel.numel_by_kind(&map).keys().copied().collect::<Vec<_>>(),
        vec![ParamKind::LmHead]
    );

    let sel = run(&preset("full-llm").unwrap(), &map);
    assert_eq!(sel.len(), 21);
}

#[test]
fn layer_filters() {
    let map = tiny_map(Architecture::Qwen2, 4);
    let attn = |layers: &[usize]| -> BTreeSet<String> {
        layers.iter().flat_map(|&l| attn_names(l, true)).collect()
    };
    let sa = ["q", "k", "v", "o"];

    let sel = run(&with_layers(&sa, LayerSpec::parse("-1..").unwrap()), &map);
    assert_eq!(sel.names, attn(&[3]));
    assert_eq!(sel.lowest_layer(&map), Some(3));

    let sel = run(&with_layers(&sa, LayerSpec::parse("0..1").unwrap()), &map);
    assert_eq!(sel.names, attn(&[0]));
    assert_eq!(sel.lowest_layer(&map), Some(0));

    let sel = run(&with_layers(&sa, LayerSpec::List(vec![1])), &map);
    assert_eq!(sel.names, attn(&[1]));
    assert_eq!(
        sel.numel_by_layer(&map).keys().copied().collect::<Vec<_>>(),
        vec![1]
    );

    let sel = run(&with_layers(&sa, LayerSpec::parse("0,1").unwrap()), &map);
    assert_eq!(sel.names, attn(&[0, 1]));

    let sel = run(
        &with_layers(&["attn"], LayerSpec::parse("-3..-1").unwrap()),
        &map,
    );
    assert_eq!(sel.names, attn(&[1, 2]));
    assert_eq!(sel.lowest_layer(&map), Some(1));

    let sel = run(&with_layers(&sa, LayerSpec::parse("all").unwrap()), &map);
    assert_eq!(sel.names, attn(&[0, 1, 2, 3]));

    // The filter leaves unlayered parameters alone: the final norm stays.
    let sel = run(
        &with_layers(&["norm"], LayerSpec::parse("2").unwrap()),
        &map,
    );
    let want: BTreeSet<String> = [
        "model.layers.2.input_layernorm.weight",
        "model.layers.2.post_attention_layernorm.weight",
        "model.norm.weight",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(sel.names, want);
}

#[test]
fn include_exclude_and_biases() {
    let map = tiny_map(Architecture::Qwen2, 2);

    let spec = TrainableSpec {
        include: vec!["model.layers.*.self_attn.q_proj.*".into()],
        ..Default::default()
    };
    let want: BTreeSet<String> = (0..2)
        .flat_map(|l| {
            [
                format!("model.layers.{l}.self_attn.q_proj.bias"),
                format!("model.layers.{l}.self_attn.q_proj.weight"),
            ]
        })
        .collect();
    assert_eq!(run(&spec, &map).names, want);

    let spec = TrainableSpec {
        include: vec![r"re:.*\.o_proj\.weight".into()],
        ..Default::default()
    };
    let want: BTreeSet<String> = (0..2)
        .map(|l| format!("model.layers.{l}.self_attn.o_proj.weight"))
        .collect();
    assert_eq!(run(&spec, &map).names, want);

    // Kinds plus include, minus exclude; an excluded weight takes its bias along.
    let spec = TrainableSpec {
        kinds: vec!["mlp".into()],
        include: vec!["model.layers.1.self_attn.k_proj.weight".into()],
        exclude: vec!["model.layers.0.*".into()],
        ..Default::default()
    };
    let mut want: BTreeSet<String> = mlp_names(1, &["gate", "up", "down"]).into_iter().collect();
    want.insert("model.layers.1.self_attn.k_proj.weight".into());
    want.insert("model.layers.1.self_attn.k_proj.bias".into());
    assert_eq!(run(&spec, &map).names, want);

    let spec = TrainableSpec {
        kinds: vec!["attn".into()],
        exclude: vec!["re:.*\\.q_proj\\.weight".into()],
        ..Default::default()
    };
    let sel = run(&spec, &map);
    assert_eq!(sel.len(), 2 * 5, "k v o weights and k v biases per layer");
    assert!(sel.names.iter().all(|n| !n.contains("q_proj")));

    // biases: false drops every bias unless an include names it.
    let spec = TrainableSpec {
        kinds: vec!["attn".into()],
        biases: false,
        ..Default::default()
    };
    let want: Vec<String> = (0..2).flat_map(|l| attn_names(l, false)).collect();
    assert_eq!(run(&spec, &map).names, set(&want));
    let spec = TrainableSpec {
        kinds: vec!["attn".into()],
        include: vec!["*.layers.0.self_attn.v_proj.bias".into()],
        biases: false,
        ..Default::default()
    };
    assert_eq!(run(&spec, &map).len(), 8 + 1);
}

#[test]
fn errors_say_what_to_fix() {
    let qwen = tiny_map(Architecture::Qwen2, 2);
    let llama = tiny_map(Architecture::Llama, 2);

    let e = fail(&TrainableSpec::from_kinds(&["qq"]), &qwen);
    assert!(
        e.contains("unknown kind `qq`") && e.contains("did you mean `q`"),
        "{e}"
    );
    assert!(
        e.contains("attn") && e.contains("mlp") && e.contains("llm") && e.contains("gate"),
        "{e}"
    );
    let e = fail(&TrainableSpec::from_kinds(&["mlps"]), &qwen);
    assert!(e.contains("did you mean `mlp`"), "{e}");

    let e = fail(&TrainableSpec::from_kinds(&["lm_head"]), &qwen);
    assert!(
        e.contains("`lm_head`") && e.contains("ties") && e.contains("`embed`"),
        "{e}"
    );

    let e = fail(&TrainableSpec::from_kinds(&["vision"]), &llama);
    assert!(e.contains("`vision` matches no parameter"), "{e}");
    assert!(e.contains("closest parameter names"), "{e}");
    let e = fail(&preset("projector").unwrap(), &qwen);
    assert!(e.contains("`projector` matches no parameter"), "{e}");

    let spec = TrainableSpec {
        include: vec!["model.layers.*.self_attn.qproj.weight".into()],
        ..Default::default()
    };
    let e = fail(&spec, &qwen);
    assert!(
        e.contains("trainable.include") && e.contains("`model.layers.*.self_attn.qproj.weight`"),
        "{e}"
    );
    assert!(
        e.contains("model.layers.0.self_attn.q_proj.weight"),
        "closest name listed: {e}"
    );
    let spec = TrainableSpec {
        kinds: vec!["attn".into()],
        exclude: vec!["re:.*router.*".into()],
        ..Default::default()
    };
    let e = fail(&spec, &qwen);
    assert!(
        e.contains("trainable.exclude") && e.contains("re:.*router.*") && e.contains("closest"),
        "{e}"
    );

    for layers in ["0..40", "5", "-3.."] {
        let e = fail(
            &with_layers(&["attn"], LayerSpec::parse(layers).unwrap()),
            &qwen,
        );
        assert!(e.contains("2 layers"), "{layers}: {e}");
    }
    let e = fail(&with_layers(&["attn"], LayerSpec::List(vec![0, 5])), &qwen);
    assert!(e.contains("layer 5") && e.contains("2 layers"), "{e}");

    let e = format!("{:#}", LayerSpec::parse("0..two").unwrap_err());
    assert!(e.contains("\"0..two\""), "{e}");
    let spec = TrainableSpec {
        include: vec!["re:model.(layers".into()],
        ..Default::default()
    };
    let e = fail(&spec, &qwen);
    assert!(
        e.contains("\"re:model.(layers\"") && e.contains("regular expression"),
        "{e}"
    );

    let spec = TrainableSpec {
        kinds: vec!["mlp".into()],
        exclude: vec!["*.mlp.*".into()],
        ..Default::default()
    };
    assert!(fail(&spec, &qwen).contains("the trainable selection is empty"));
    assert!(fail(&TrainableSpec::default(), &qwen).contains("the trainable selection is empty"));
}

#[test]
fn presets_are_listed() {
    assert_eq!(PRESETS.len(), 9);
    for name in PRESETS {
        assert!(preset(name).is_some(), "{name}");
    }
    assert_eq!(preset("mlp").unwrap().kinds, vec!["gate", "up", "down"]);
    assert_eq!(preset("full-llm").unwrap().kinds, vec!["llm"]);
}

#[test]
fn yaml_round_trip() {
    let text = "kinds: [q, k, v, o]\nlayers: \"-4..\"\ninclude: ['re:.*\\.o_proj\\.weight']\nexclude: []\nbiases: false\n";
    let spec: TrainableSpec = serde_yaml::from_str(text).unwrap();
    assert_eq!(spec.layers, Some(LayerSpec::parse("-4..").unwrap()));
    assert_eq!(spec.include, vec![r"re:.*\.o_proj\.weight"]);
    assert!(!spec.biases);
    let back: TrainableSpec = serde_yaml::from_str(&serde_yaml::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);

    let spec: TrainableSpec = serde_yaml::from_str("kinds: [attn]\nlayers: [0, 1, 5]\n").unwrap();
    assert_eq!(spec.layers, Some(LayerSpec::List(vec![0, 1, 5])));
    assert!(spec.biases, "biases default to true");
    let yaml = serde_yaml::to_string(&spec).unwrap();
    assert!(yaml.contains("- 5"), "list form stays a list: {yaml}");
    let back: TrainableSpec = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, spec);
    assert_eq!(spec.layers.unwrap().to_string(), "0,1,5");

    for text in ["all", "0..8", "4..", "..4", "-4..-1", "3", "0,2,5..7"] {
        let spec = TrainableSpec {
            layers: Some(LayerSpec::parse(text).unwrap()),
            ..TrainableSpec::from_kinds(&["mlp"])
        };
        let yaml = serde_yaml::to_string(&spec).unwrap();
        let back: TrainableSpec = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, spec, "{yaml}");
    }

    let empty: TrainableSpec = serde_yaml::from_str("{}").unwrap();
    assert_eq!(empty, TrainableSpec::default());
    let e = serde_yaml::from_str::<TrainableSpec>("kinds: [q]\nbias: false\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bias"), "{e}");
    let e = serde_yaml::from_str::<TrainableSpec>("layers: \"1..x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"1..x\""), "{e}");
}
