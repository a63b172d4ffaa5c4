//! The GPU re-scorer: the `rescore.wgsl` kernel over resident or streamed
//! gallery blobs, batched, with uploads and readbacks overlapped with
//! compute (up to [`IN_FLIGHT`] batches queued). Waiting for a batch is
//! bounded by [`GpuOptions::poll_timeout`] (a hung device becomes
//! [`RescoreError::Timeout`], never a search blocked forever), and a
//! request's [`Cancel`] is checked between batches.

use super::context::{GpuContext, GpuOptions};
use super::layout::{GpuItem, GpuParams, PAIR_COUNTS_WGSL, RESCORE_WGSL};
use crate::cancel::Cancel;
use crate::mcc::{Matcher, ScoreParts};
use crate::rescore::{Backend, Query, RescoreError, Rescorer};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wgpu::util::DeviceExt;

mod dispatch;
mod resident;

use dispatch::Batch;
use resident::Resident;

/// Batches queued on the GPU before the host waits for the oldest.
pub const IN_FLIGHT: usize = 3;

/// Where time went during the last `rescore` call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Building and writing buffers (probes, streamed blobs, work lists).
    pub upload: Duration,
    /// Waiting for the GPU to finish (dispatches queued in between overlap with uploads).
    pub compute: Duration,
    /// Mapping and copying results back.
    pub readback: Duration,
    /// Work items scored.
    pub items: usize,
    /// Dispatches issued.
    pub dispatches: usize,
}

/// The GPU backend of [`Rescorer`].
pub struct GpuRescorer {
    ctx: GpuContext,
    pipeline: wgpu::ComputePipeline,
    counts_pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    luts: wgpu::Buffer,
    params: GpuParams,
    max_binding: u64,
    max_items: usize,
    resident: Mutex<HashMap<u64, Arc<Resident>>>,
    resident_budget: u64,
    timings: Mutex<Timings>,
    poll_timeout: Option<Duration>,
}

impl std::fmt::Debug for GpuRescorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuRescorer").field("ctx", &self.ctx).finish()
    }
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl GpuRescorer {
    /// Opens a device and builds the pipeline once. `resident_budget` bytes
    /// of shard data may be kept on the GPU.
    pub fn new(matcher: &Matcher, opts: &GpuOptions, resident_budget: u64) -> Result<GpuRescorer, RescoreError> {
        let ctx = GpuContext::new(opts)?;
        let d = &ctx.device;
        super::layout::validate(RESCORE_WGSL).map_err(RescoreError::Gpu)?;
        let scope = d.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("rescore.wgsl"),
            source: wgpu::ShaderSource::Wgsl(RESCORE_WGSL.into()),
        });
        let counts_module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("pair_counts.wgsl"),
            source: wgpu::ShaderSource::Wgsl(PAIR_COUNTS_WGSL.into()),
        });
        let mut entries: Vec<wgpu::BindGroupLayoutEntry> =
            vec![storage(0, true), storage(1, true), storage(2, true), storage(3, true), storage(4, false)];
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: 5,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
        let layout =
            d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("rescore"), entries: &entries });
        let pl = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("rescore"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let compute = |label: &str, module: &wgpu::ShaderModule| {
            d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(&pl),
                module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            })
        };
        let pipeline = compute("rescore", &module);
        let counts_pipeline = compute("pair_counts", &counts_module);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(RescoreError::Gpu(format!("pipeline: {e}")));
        }
        let l = matcher.luts();
        let mut table: Vec<u32> = l.sqrt.clone();
        let lut_z1 = table.len() as u32;
        table.extend(&l.z1);
        let lut_z2 = table.len() as u32;
        table.extend(&l.z2);
        let lut_z3 = table.len() as u32;
        table.extend(&l.z3);
        let lut_np = table.len() as u32;
        table.extend(&l.np);
        let lut_stretch = table.len() as u32;
        table.extend(&l.stretch);
        let luts = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("luts"),
            contents: bytemuck::cast_slice(&table),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let params = GpuParams {
            n_items: 0,
            min_me_cells: l.min_me_cells,
            delta_theta: l.delta_theta,
            n_rel: l.n_rel,
            lut_z1,
            lut_z2,
            lut_z3,
            lut_np,
            lut_stretch,
            pad: [0; 3],
        };
        let limits = d.limits();
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(opts.max_binding.unwrap_or(u64::MAX).max(4096))
            & !7;
        let max_items = (limits.max_compute_workgroups_per_dimension as usize)
            .pow(2)
            .min(max_binding as usize / 16)
            .min(1 << 20)
            .min(opts.max_items.unwrap_or(usize::MAX).max(1));
        ctx.check()?;
        Ok(GpuRescorer {
            ctx,
            pipeline,
            counts_pipeline,
            layout,
            luts,
            params,
            max_binding,
            max_items,
            resident: Mutex::new(HashMap::new()),
            resident_budget,
            timings: Mutex::new(Timings::default()),
            poll_timeout: opts.poll_timeout,
        })
    }

    /// The device's description.
    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    /// The largest storage binding this device allows, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

    /// Timings of the last `rescore` call.
    pub fn last_timings(&self) -> Timings {
        self.timings.lock().map(|t| *t).unwrap_or_default()
    }

    /// The device context (tests destroy it to exercise the fall-back).
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }
}

/// Work items of one gallery buffer, with their (query, candidate) slots.
type Group = Vec<(GpuItem, (usize, usize))>;

/// A gallery buffer: a resident chunk or a streamed group.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Source {
    Resident(u64, u32),
    Streamed(usize),
}

impl Rescorer for GpuRescorer {
    fn backend(&self) -> Backend {
        Backend::Gpu(self.describe())
    }

    fn rescore(&self, queries: &[Query<'_>]) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        self.rescore_until(queries, &Cancel::default())
    }

    fn rescore_until(&self, queries: &[Query<'_>], cancel: &Cancel) -> Result<Vec<Vec<ScoreParts>>, RescoreError> {
        cancel.check().map_err(RescoreError::Stopped)?;
        self.ctx.check()?;
        // The probes of one call share one binding: more than fit are
        // scored in groups that do, one call each (a single probe larger
        // than a binding is refused below).
        let probe_bytes = |q: &Query<'_>| q.probe.words().len() as u64 * 8;
        if queries.len() > 1 && queries.iter().map(probe_bytes).sum::<u64>() > self.max_binding {
            let mut out = Vec::with_capacity(queries.len());
            let (mut start, mut bytes) = (0, 0u64);
            for (i, q) in queries.iter().enumerate() {
                if i > start && bytes + probe_bytes(q) > self.max_binding {
                    out.extend(self.rescore(&queries[start..i])?);
                    (start, bytes) = (i, 0);
                }
                bytes += probe_bytes(q);
            }
            out.extend(self.rescore(&queries[start..])?);
            return Ok(out);
        }
        let d = &self.ctx.device;
        let t0 = Instant::now();
        let mut timings = Timings::default();
        // Probes, concatenated.
        let mut probe_words: Vec<u32> = Vec::new();
        let mut probe_at = Vec::with_capacity(queries.len());
        for q in queries {
            probe_at.push(probe_words.len() as u32);
            probe_words.extend_from_slice(bytemuck::cast_slice(q.probe.words()));
        }
        if (probe_words.len() * 4) as u64 > self.max_binding {
            return Err(RescoreError::Gpu("too many probes in one call for one binding".into()));
        }
        // Work items grouped by gallery buffer.
        let resident = self.resident.lock().map(|r| r.clone()).unwrap_or_default();
        let mut groups: HashMap<Source, Group> = HashMap::new();
        let mut streamed: Vec<Vec<u32>> = vec![Vec::new()];
        let max_words = (self.max_binding / 4) as usize;
        for (qi, q) in queries.iter().enumerate() {
            for (ci, c) in q.candidates.iter().enumerate() {
                let res = c.location.and_then(|l| {
                    resident.get(&l.shard).and_then(|r| r.at.get(l.template as usize).map(|a| (l.shard, *a)))
                });
                let (src, cand) = match res {
                    Some((key, (chunk, off))) => (Source::Resident(key, chunk), off),
                    None => {
                        let w: &[u32] = bytemuck::cast_slice(c.prepared.words());
                        if streamed.last().is_some_and(|s| s.len() + w.len() > max_words) {
                            streamed.push(Vec::new());
                        }
                        let s = streamed.last_mut().expect("one group at least");
                        let off = s.len() as u32;
                        s.extend_from_slice(w);
                        (Source::Streamed(streamed.len() - 1), off)
                    }
                };
                groups.entry(src).or_default().push((GpuItem { probe: probe_at[qi], cand }, (qi, ci)));
            }
        }
        let probes = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("probes"),
            contents: bytemuck::cast_slice(if probe_words.is_empty() { &[0u32] } else { &probe_words }),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let streamed_bufs: Vec<wgpu::Buffer> = streamed
            .iter()
            .map(|s| {
                d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("streamed candidates"),
                    contents: bytemuck::cast_slice(if s.is_empty() { &[0u32] } else { s }),
                    usage: wgpu::BufferUsages::STORAGE,
                })
            })
            .collect();
        timings.upload += t0.elapsed();
        let mut out: Vec<Vec<ScoreParts>> =
            queries.iter().map(|q| vec![ScoreParts::default(); q.candidates.len()]).collect();
        let mut queue: VecDeque<Batch> = VecDeque::new();
        let mut sources: Vec<_> = groups.into_iter().collect();
        sources.sort_by_key(|(s, _)| format!("{s:?}"));
        for (src, items) in &sources {
            let gallery = match src {
                Source::Resident(k, c) => &resident[k].chunks[*c as usize],
                Source::Streamed(i) => &streamed_bufs[*i],
            };
            for part in items.chunks(self.max_items.max(1)) {
                cancel.check().map_err(RescoreError::Stopped)?;
                let t = Instant::now();
                let batch = self.submit(gallery, &probes, part)?;
                timings.upload += t.elapsed();
                timings.items += part.len();
                timings.dispatches += 1;
                queue.push_back(batch);
                if queue.len() >= IN_FLIGHT {
                    let b = queue.pop_front().expect("non-empty");
                    self.collect(b, &mut out, &mut timings)?;
                }
            }
        }
        while let Some(b) = queue.pop_front() {
            self.collect(b, &mut out, &mut timings)?;
        }
        self.ctx.check()?;
        if let Ok(mut t) = self.timings.lock() {
            *t = timings;
        }
        Ok(out)
    }
}
