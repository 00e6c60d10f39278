//! Commands of the `autoglm` binary: those that drive the language-model engine, plugin
//! distribution and tasks.

pub mod chat;
pub mod eval;
pub mod generate;
pub mod plugin;
pub mod task;

/// A progress bar for loading a checkpoint, one tick per layer.
pub fn load_bar(model: &std::path::Path) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} layers")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(model.display().to_string());
    bar
}

/// Load the checkpoint in `dir`, with `adapter` applied, showing a progress bar on the terminal.
pub fn load_engine(
    dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
    device: autoglm_engine::DeviceChoice,
) -> anyhow::Result<autoglm_engine::Engine> {
    use anyhow::Context;
    let bar = load_bar(dir);
    let engine = autoglm_engine::Engine::load_adapted(dir, adapter, device, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("cannot load the model in {}", dir.display()))?;
    bar.finish_and_clear();
    Ok(engine)
}
