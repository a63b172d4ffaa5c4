//! Choosing an adapter and opening a device, with wgpu's errors turned into
//! values: uncaptured errors and device loss are recorded and checked after
//! every submission instead of panicking.

use crate::rescore::RescoreError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How to pick the GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuOptions {
    /// Accept software adapters (lavapipe, WARP): correct but slow; tests use them.
    pub allow_software: bool,
    /// Use the adapter whose name contains this (e.g. from `WHORL_GPU_ADAPTER`).
    pub adapter_name: Option<String>,
    /// Longest wait for one batch; past it the batch fails with
    /// [`RescoreError::Timeout`] (a hung device). `None` (the default):
    /// wait for as long as it takes; the server sets
    /// `backend.gpu_poll_timeout_ms`.
    pub poll_timeout: Option<std::time::Duration>,
    /// Cap on one storage binding, bytes (default: the device's limit;
    /// `WHORL_GPU_MAX_BINDING`). Small values split galleries into many
    /// chunks, so that tests run the multi-chunk paths on any device.
    pub max_binding: Option<u64>,
    /// Cap on work items per dispatch (default: the device's limit;
    /// `WHORL_GPU_MAX_ITEMS`). Small values make many batches.
    pub max_items: Option<usize>,
}

impl Default for GpuOptions {
    fn default() -> GpuOptions {
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
        GpuOptions {
            allow_software: true,
            adapter_name: std::env::var("WHORL_GPU_ADAPTER").ok(),
            max_binding: num("WHORL_GPU_MAX_BINDING"),
            max_items: num("WHORL_GPU_MAX_ITEMS").map(|v| v as usize),
            poll_timeout: None,
        }
    }
}

/// What `WHORL_REQUIRE_GPU` asks of tests: `1` or `any`, a GPU backend must
/// open, a software adapter (lavapipe) counting; `hardware`, it must be a
/// hardware adapter; unset or anything else, tests without an adapter skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Skip GPU tests without an adapter.
    None,
    /// Any adapter, software included.
    Any,
    /// A hardware adapter.
    Hardware,
}

impl Requirement {
    /// From `WHORL_REQUIRE_GPU`.
    pub fn from_env() -> Requirement {
        match std::env::var("WHORL_REQUIRE_GPU").as_deref().map(str::trim) {
            Ok("1") | Ok("any") | Ok("software") => Requirement::Any,
            Ok("hardware") => Requirement::Hardware,
            _ => Requirement::None,
        }
    }
}

/// An open device and what is known of it.
pub struct GpuContext {
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The adapter's description.
    pub info: wgpu::AdapterInfo,
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<AtomicBool>,
    lost_reason: Arc<Mutex<String>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext").field("adapter", &self.info.name).field("backend", &self.info.backend).finish()
    }
}

/// Preference order: discrete, integrated, virtual, other, software.
fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl GpuContext {
    /// Picks the best adapter and opens a device with all its limits.
    pub fn new(opts: &GpuOptions) -> Result<GpuContext, RescoreError> {
        pollster::block_on(Self::open(opts))
    }

    async fn open(opts: &GpuOptions) -> Result<GpuContext, RescoreError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let mut adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        adapters.retain(|a| {
            let i = a.get_info();
            (opts.allow_software || i.device_type != wgpu::DeviceType::Cpu)
                && opts.adapter_name.as_ref().is_none_or(|n| i.name.to_lowercase().contains(&n.to_lowercase()))
        });
        adapters.sort_by_key(|a| (rank(a.get_info().device_type), a.get_info().backend != wgpu::Backend::Vulkan));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            RescoreError::NoAdapter(format!(
                "no {}GPU adapter found{} (install a Vulkan driver, e.g. mesa-vulkan-drivers for lavapipe)",
                if opts.allow_software { "" } else { "hardware " },
                opts.adapter_name.as_ref().map(|n| format!(" matching '{n}'")).unwrap_or_default()
            ))
        })?;
        let info = adapter.get_info();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("whorl"),
                required_features: wgpu::Features::empty(),
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| RescoreError::NoAdapter(format!("{}: {e}", info.name)))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = Arc::clone(&errors);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let msg = match &e {
                wgpu::Error::OutOfMemory { .. } => format!("out of memory: {e}"),
                other => other.to_string(),
            };
            if let Ok(mut v) = sink.lock() {
                v.push(msg);
            }
        }));
        let lost = Arc::new(AtomicBool::new(false));
        let lost_reason: Arc<Mutex<String>> = Arc::default();
        let (l, r) = (Arc::clone(&lost), Arc::clone(&lost_reason));
        device.set_device_lost_callback(move |reason: wgpu::DeviceLostReason, msg: String| {
            l.store(true, Ordering::SeqCst);
            if let Ok(mut s) = r.lock() {
                *s = format!("{reason:?}: {msg}");
            }
        });
        tracing::info!(
            "GPU: {} ({:?}, {:?}, driver {} {})",
            info.name,
            info.backend,
            info.device_type,
            info.driver,
            info.driver_info
        );
        Ok(GpuContext { device, queue, info, errors, lost, lost_reason })
    }

    /// A short description: adapter, API, kind.
    pub fn describe(&self) -> String {
        format!("{} ({:?}, {:?})", self.info.name, self.info.backend, self.info.device_type)
    }

    /// Whether the adapter is a software rasteriser.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Turns a lost device or a recorded error into a value.
    pub fn check(&self) -> Result<(), RescoreError> {
        if self.lost.load(Ordering::SeqCst) {
            let why = self.lost_reason.lock().map(|s| s.clone()).unwrap_or_default();
            return Err(RescoreError::DeviceLost(why));
        }
        let first = self
            .errors
            .lock()
            .ok()
            .and_then(|mut v| if v.is_empty() { None } else { Some(v.drain(..).collect::<Vec<_>>()) });
        match first {
            Some(v) if v[0].starts_with("out of memory") => Err(RescoreError::OutOfMemory(v.join("; "))),
            Some(v) => Err(RescoreError::Gpu(v.join("; "))),
            None => Ok(()),
        }
    }

    /// Marks the device lost (tests of the fall-back use this).
    pub fn destroy(&self) {
        self.device.destroy();
        let _ = self.device.poll(wgpu::PollType::Poll);
    }
}
