//! Shard data resident on the GPU: a shard's prepared section uploaded
//! once in chunks that each fit one storage binding, within the resident
//! budget, and dropped again.

use super::GpuRescorer;
use crate::rescore::RescoreError;
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// A shard's prepared section kept on the GPU, split into chunks that each
/// fit one storage binding.
pub(super) struct Resident {
    pub(super) chunks: Vec<wgpu::Buffer>,
    /// Per template: (chunk, u32 offset in the chunk).
    pub(super) at: Vec<(u32, u32)>,
    bytes: u64,
}

impl GpuRescorer {
    /// Uploads a shard's prepared section (`words`, per-template word
    /// `offsets`, one more than templates) under `key`, split into chunks
    /// that fit one binding. Returns false (and keeps nothing) when it does
    /// not fit the resident budget: its candidates are then streamed.
    pub fn make_resident(&self, key: u64, words: &[u64], offsets: &[u64]) -> Result<bool, RescoreError> {
        let bytes = (words.len() * 8) as u64;
        let used: u64 = self.resident.lock().map(|r| r.values().map(|x| x.bytes).sum()).unwrap_or(0);
        if used + bytes > self.resident_budget {
            return Ok(false);
        }
        let max_words = (self.max_binding / 8) as usize;
        let (mut chunks, mut at) = (Vec::new(), Vec::with_capacity(offsets.len().saturating_sub(1)));
        let n = offsets.len().saturating_sub(1);
        let mut t = 0usize;
        while t < n {
            let first = t;
            while t < n && (offsets[t + 1] as usize - offsets[first] as usize) <= max_words {
                at.push((chunks.len() as u32, 2 * (offsets[t] as usize - offsets[first] as usize) as u32));
                t += 1;
            }
            if t == first {
                return Err(RescoreError::Gpu(format!("template {t} does not fit one binding")));
            }
            let (start, end) = (offsets[first] as usize, offsets[t] as usize);
            let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buf = self.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("resident shard chunk"),
                contents: bytemuck::cast_slice(&words[start..end]),
                usage: wgpu::BufferUsages::STORAGE,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(RescoreError::OutOfMemory(e.to_string()));
            }
            chunks.push(buf);
        }
        self.ctx.check()?;
        if let Ok(mut r) = self.resident.lock() {
            r.insert(key, Arc::new(Resident { chunks, at, bytes }));
        }
        Ok(true)
    }

    /// Drops a resident shard.
    pub fn evict(&self, key: u64) {
        if let Ok(mut r) = self.resident.lock() {
            r.remove(&key);
        }
    }

    /// Keys of the resident shards.
    pub fn resident_keys(&self) -> Vec<u64> {
        self.resident.lock().map(|r| r.keys().copied().collect()).unwrap_or_default()
    }

    /// Bytes of shard data resident.
    pub fn resident_bytes(&self) -> u64 {
        self.resident.lock().map(|r| r.values().map(|x| x.bytes).sum()).unwrap_or(0)
    }
}
