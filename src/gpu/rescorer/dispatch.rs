//! One batch on the device: its buffers bound, the kernel dispatched, the
//! results copied back and read (each wait bounded by the poll timeout);
//! and [`GpuRescorer::pair_counts`], the per-pair popcounts kernel.

use super::{GpuRescorer, Timings};
use crate::gpu::layout::{GpuItem, GpuParams};
use crate::mcc::ScoreParts;
use crate::mcc::{PairCounts, PreparedRef};
use crate::rescore::RescoreError;
use std::time::{Duration, Instant};
use wgpu::util::DeviceExt;

/// An in-flight batch.
pub(super) struct Batch {
    readback: wgpu::Buffer,
    slots: Vec<(usize, usize)>,
    submission: wgpu::SubmissionIndex,
}

impl GpuRescorer {
    /// The popcounts of every cylinder pair of `probe` and `cand`, computed
    /// on the GPU (`pair_counts.wgsl`), row-major by probe cylinder.
    pub fn pair_counts(&self, probe: PreparedRef, cand: PreparedRef) -> Result<Vec<PairCounts>, RescoreError> {
        let d = &self.ctx.device;
        let n = (probe.len() * cand.len()) as u32;
        if n == 0 {
            return Ok(Vec::new());
        }
        let buf = |label, words: &[u64]| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(words),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let (pb, cb) = (buf("probe", probe.words()), buf("candidate", cand.words()));
        let batch =
            self.dispatch(&self.counts_pipeline, &cb, &pb, &[GpuItem { probe: 0, cand: 0 }], n, n.div_ceil(64))?;
        let mut out = Vec::with_capacity(n as usize);
        self.read(batch, |w| {
            out.extend(w.chunks_exact(4).map(|c| PairCounts { both: c[0], a: c[1], b: c[2], xor: c[3] }))
        })?;
        Ok(out)
    }

    pub(super) fn submit(
        &self,
        gallery: &wgpu::Buffer,
        probes: &wgpu::Buffer,
        part: &[(GpuItem, (usize, usize))],
    ) -> Result<Batch, RescoreError> {
        let items: Vec<GpuItem> = part.iter().map(|p| p.0).collect();
        let n = items.len() as u32;
        let mut batch = self.dispatch(&self.pipeline, gallery, probes, &items, n, n)?;
        batch.slots = part.iter().map(|p| p.1).collect();
        Ok(batch)
    }

    /// Binds the buffers, dispatches `groups` workgroups of `pipeline` over
    /// `n` result slots, and queues the copy of the results for reading.
    fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        gallery: &wgpu::Buffer,
        probes: &wgpu::Buffer,
        items: &[GpuItem],
        n: u32,
        groups: u32,
    ) -> Result<Batch, RescoreError> {
        let d = &self.ctx.device;
        let scope = d.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let items_buf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("items"),
            contents: bytemuck::cast_slice(items),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let bytes = u64::from(n) * 16;
        let results = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("results"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params = GpuParams { n_items: n, ..self.params };
        let uniform = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(RescoreError::OutOfMemory(e.to_string()));
        }
        let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rescore"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: gallery.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: probes.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: items_buf.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: self.luts.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 4, resource: results.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 5, resource: uniform.as_entire_binding() },
            ],
        });
        let mut enc = d.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rescore") });
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("rescore"), timestamp_writes: None });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            let x = groups.min(d.limits().max_compute_workgroups_per_dimension).max(1);
            pass.dispatch_workgroups(x, groups.div_ceil(x).max(1), 1);
        }
        enc.copy_buffer_to_buffer(&results, 0, &readback, 0, bytes);
        let submission = self.ctx.queue.submit([enc.finish()]);
        Ok(Batch { readback, slots: Vec::new(), submission })
    }

    pub(super) fn collect(
        &self,
        b: Batch,
        out: &mut [Vec<ScoreParts>],
        timings: &mut Timings,
    ) -> Result<(), RescoreError> {
        let slots = b.slots.clone();
        let t = Instant::now();
        let mut mapped = Duration::ZERO;
        self.read_timed(b, &mut mapped, |words| {
            for (r, &(qi, ci)) in words.chunks_exact(4).zip(&slots) {
                out[qi][ci] = ScoreParts { sum: r[0], n_p: r[1], n_r: r[2] };
            }
        })?;
        timings.compute += mapped;
        timings.readback += t.elapsed().saturating_sub(mapped);
        Ok(())
    }

    fn read(&self, b: Batch, f: impl FnOnce(&[u32])) -> Result<(), RescoreError> {
        let mut waited = Duration::ZERO;
        self.read_timed(b, &mut waited, f)
    }

    /// Waits for a batch, maps its results and hands them to `f`; `waited`
    /// gets the time spent waiting for the GPU.
    fn read_timed(&self, b: Batch, waited: &mut Duration, f: impl FnOnce(&[u32])) -> Result<(), RescoreError> {
        let t = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        b.readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ctx
            .device
            .poll(wgpu::PollType::Wait { submission_index: Some(b.submission), timeout: self.poll_timeout })
            .map_err(|e| match e {
                wgpu::PollError::Timeout => RescoreError::Timeout(self.poll_timeout.unwrap_or_default()),
                e => RescoreError::DeviceLost(format!("poll: {e}")),
            })?;
        self.ctx.check()?;
        rx.recv()
            .map_err(|e| RescoreError::Gpu(format!("readback: {e}")))?
            .map_err(|e| RescoreError::Gpu(format!("readback: {e}")))?;
        *waited += t.elapsed();
        {
            let view =
                b.readback.slice(..).get_mapped_range().map_err(|e| RescoreError::Gpu(format!("readback: {e}")))?;
            f(bytemuck::cast_slice(&view));
        }
        b.readback.unmap();
        Ok(())
    }
}
