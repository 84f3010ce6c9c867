//! `tunescope ui` / `tunescope attach`: the terminal workbench.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::recipe::{EvalSpec, ProbeSpec, Recipe};
use crate::tui::theme::Theme;
use crate::tui::App;

#[derive(Debug, Args)]
pub struct UiArgs {
    /// A recipe file or a model (directory or hub id); default: the demo.
    target: Option<String>,
    /// Colour theme: dark, light, high-contrast, colorblind, or one from themes/.
    #[arg(long, default_value = "dark")]
    theme: String,
}

impl UiArgs {
    /// What `tunescope` with no arguments opens.
    pub fn default_args() -> Self {
        Self {
            target: None,
            theme: "dark".into(),
        }
    }
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The run directory to watch.
    run_dir: PathBuf,
    #[arg(long, default_value = "dark")]
    theme: String,
}

/// Themes from the built-ins, `./themes` and `$XDG_CONFIG_HOME/tunescope/themes`; the chosen
/// one first in cycling order; `NO_COLOR` turns colour off.
fn themes(chosen: &str) -> Result<(Vec<Theme>, usize)> {
    let mut all = Theme::load_all(Some(Path::new("themes")))?;
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(dir) = config.map(|c| c.join("tunescope/themes")) {
        all.extend(Theme::load_all(Some(&dir))?);
    }
    let mut list: Vec<Theme> = all.into_values().collect();
    let index = list
        .iter()
        .position(|t| t.name == chosen)
        .with_context(|| {
            format!(
                "unknown theme `{chosen}`; available: {}",
                list.iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        list = list.into_iter().map(Theme::monochrome).collect();
    }
    Ok((list, index))
}

/// The recipe the workbench opens with no arguments: the demo when present, else a tiny model
/// written on the spot with the shipped counting data.
pub fn default_recipe() -> Result<(Recipe, Option<PathBuf>)> {
    let demo = PathBuf::from("recipes/demo-sa-proj.yaml");
    if demo.is_file() && Path::new("assets/demo-model/config.json").is_file() {
        return Ok((Recipe::load(&demo, &[])?, Some(demo)));
    }
    let model = PathBuf::from("models/tiny-qwen2");
    if !model.join("config.json").is_file() {
        crate::model::tiny::make_tiny(
            &crate::model::tiny::TinySpec::new(crate::model::Architecture::Qwen2, 0),
            &model,
        )?;
    }
    let path = PathBuf::from("recipes/sa-proj.yaml");
    let mut recipe = if path.is_file() {
        Recipe::load(&path, &[])?
    } else {
        Recipe::default()
    };
    recipe.model = Some(model.display().to_string());
    recipe.optimizer.lr = 1e-2;
    recipe.max_steps = Some(60);
    recipe.batch_size = 8;
    if Path::new("assets/train/counting.jsonl").is_file() {
        recipe.data = Some("assets/train/counting.jsonl".into());
        recipe.probe = Some(ProbeSpec {
            every_steps: 10,
            heldout: Some("assets/probe/heldout.jsonl".into()),
            target: Some("assets/probe/target.jsonl".into()),
            max_new_tokens: 8,
            max_prompts: Some(32),
            ..ProbeSpec::default()
        });
        recipe.eval = Some(EvalSpec {
            every_steps: 20,
            tasks: ["counting", "antonyms", "category", "reverse"]
                .iter()
                .map(|t| format!("assets/tasks/{t}.yaml"))
                .collect(),
            max_items: Some(40),
        });
    }
    Ok((recipe, None))
}

pub fn run(args: UiArgs) -> Result<()> {
    let (themes, index) = themes(&args.theme)?;
    let (recipe, path) = match &args.target {
        None => default_recipe()?,
        Some(target) if target.ends_with(".yaml") || target.ends_with(".yml") => {
            let path = PathBuf::from(target);
            (Recipe::load(&path, &[])?, Some(path))
        }
        Some(model) => {
            let (mut recipe, _) = default_recipe()?;
            recipe.model = Some(model.clone());
            (recipe, None)
        }
    };
    crate::tui::run(App::new(recipe, path, themes, index))
}

pub fn attach(args: AttachArgs) -> Result<()> {
    let (themes, index) = themes(&args.theme)?;
    let run = crate::run::RunDir::open(&args.run_dir)?;
    let recipe = run.read_recipe()?;
    let mut app = App::new(recipe, None, themes, index);
    app.attach(&args.run_dir)?;
    crate::tui::run(app)
}
