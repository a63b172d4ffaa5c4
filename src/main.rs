//! The `whorl` command line.

mod cli;

fn main() -> std::process::ExitCode {
    quiet_vulkan_layers();
    cli::main()
}

/// Mesa's Vulkan device-selection layer (loaded implicitly by the Vulkan
/// loader wherever Mesa is installed) tries to reach a Wayland display
/// when an instance is created, and libwayland prints `error:
/// XDG_RUNTIME_DIR is invalid or not set in the environment.` on servers
/// and CI where that variable is unset. whorl picks its adapter itself, so
/// the layer is switched off there (`NODEVICE_SELECT=1`, the layer's own
/// off switch). Anyone who set the variable either way keeps their choice.
fn quiet_vulkan_layers() {
    let has_runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_dir());
    if has_runtime_dir || std::env::var_os("NODEVICE_SELECT").is_some() {
        return;
    }
    // SAFETY: `set_var` is unsafe because another thread could read the
    // environment at the same time. This runs first thing in `main`,
    // before any thread (tokio, rayon, wgpu, the progress ticker) exists.
    unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
}
