//! The Llama-family decoder: config, weights (GGUF / HF safetensors), the model on burn (GPUs,
//! training) and the CPU engine on host buffers, behind one [`Engine`] that generation uses.

pub mod adapter;
pub mod config;
pub mod cpu;
pub mod family;
pub mod model;
pub mod weights;

use burn::prelude::*;

pub use config::DecoderConfig;
pub use cpu::CpuDecoder;
pub use family::{Family, SlidingWindow};
pub use model::Decoder;

use crate::error::{Error, Result};
use crate::loading::ModelPath;
use crate::nn::KvCache;
use crate::nn::linear::{Precision, is_host_cpu};
use weights::DecoderWeights;

/// What generation needs from a decoder: a cache, a forward over new tokens returning the last
/// position's logits per stream, and forking / trimming the cache across streams.
pub trait LanguageModel: Sync {
    type Cache: Send;
    fn new_cache(&self, batch: usize) -> Self::Cache;
    /// Logits after the last position of each row: `rows` vectors of `vocab`.
    fn forward_last(&self, ids: &[Vec<u32>], cache: &mut Self::Cache) -> Result<Vec<Vec<f32>>>;
    /// A batch-1 cache as the shared prefix of `n` streams.
    fn fork(&self, cache: &Self::Cache, n: usize) -> Result<Self::Cache>;
    /// Keeps the streams `rows`.
    fn retain(&self, cache: &mut Self::Cache, rows: &[usize]);
    fn config(&self) -> &DecoderConfig;
}

impl LanguageModel for Decoder {
    type Cache = KvCache;

    fn new_cache(&self, batch: usize) -> KvCache {
        Decoder::new_cache(self, batch)
    }

    fn forward_last(&self, ids: &[Vec<u32>], cache: &mut KvCache) -> Result<Vec<Vec<f32>>> {
        let logits = Decoder::forward_last(self, ids, cache)?;
        let [rows, vocab] = logits.dims();
        let flat: Vec<f32> = logits
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::Invalid(format!("reading logits: {e:?}")))?;
        Ok((0..rows).map(|r| flat[r * vocab..(r + 1) * vocab].to_vec()).collect())
    }

    fn fork(&self, cache: &KvCache, n: usize) -> Result<KvCache> {
        Ok(cache.fork(n))
    }

    fn retain(&self, cache: &mut KvCache, rows: &[usize]) {
        cache.retain_rows(rows);
    }

    fn config(&self) -> &DecoderConfig {
        &self.config
    }
}

impl LanguageModel for CpuDecoder {
    type Cache = cpu::CpuKvCache;

    fn new_cache(&self, batch: usize) -> cpu::CpuKvCache {
        CpuDecoder::new_cache(self, batch)
    }

    fn forward_last(&self, ids: &[Vec<u32>], cache: &mut cpu::CpuKvCache) -> Result<Vec<Vec<f32>>> {
        CpuDecoder::forward_last(self, ids, cache)
    }

    fn fork(&self, cache: &cpu::CpuKvCache, n: usize) -> Result<cpu::CpuKvCache> {
        cache.fork(n)
    }

    fn retain(&self, cache: &mut cpu::CpuKvCache, rows: &[usize]) {
        cache.retain_rows(rows);
    }

    fn config(&self) -> &DecoderConfig {
        &self.config
    }
}

/// The decoder as the device runs it best: the CPU engine on the CPU backend, the burn model on
/// a GPU (or under autodiff).
#[derive(Debug)]
pub enum Engine {
    Cpu(Box<CpuDecoder>),
    Burn(Box<Decoder>),
}

/// The cache of whichever engine.
#[derive(Debug, Clone)]
pub enum EngineCache {
    Cpu(cpu::CpuKvCache),
    Burn(KvCache),
}

impl Engine {
    /// Loads `model` for `device`.
    pub fn load(model: &ModelPath, device: &Device, precision: Precision) -> Result<Self> {
        let (config, weights) = DecoderWeights::load(model)?;
        Self::from_weights(config, weights, device, precision)
    }

    /// Builds the engine for `device` from loaded weights (which may have been changed since
    /// loading, e.g. with a LoRA adapter merged in); every weight must be used.
    pub fn from_weights(
        config: DecoderConfig,
        mut weights: DecoderWeights,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let engine = if is_host_cpu(device) {
            let mut m = CpuDecoder::from_weights(config, &mut weights)?;
            m.precision = precision;
            Engine::Cpu(Box::new(m))
        } else {
            let mut m = Decoder::from_weights(config, &mut weights, device)?;
            m.set_precision(precision);
            Engine::Burn(Box::new(m))
        };
        weights.finish()?;
        Ok(engine)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Cpu(_) => "cpu-engine",
            Engine::Burn(_) => "burn",
        }
    }
}

fn mismatch() -> Error {
    Error::Invalid("a cache of one engine was passed to the other".into())
}

impl LanguageModel for Engine {
    type Cache = EngineCache;

    fn new_cache(&self, batch: usize) -> EngineCache {
        match self {
            Engine::Cpu(m) => EngineCache::Cpu(m.new_cache(batch)),
            Engine::Burn(m) => EngineCache::Burn(m.new_cache(batch)),
        }
    }

    fn forward_last(&self, ids: &[Vec<u32>], cache: &mut EngineCache) -> Result<Vec<Vec<f32>>> {
        match (self, cache) {
            (Engine::Cpu(m), EngineCache::Cpu(c)) => LanguageModel::forward_last(m.as_ref(), ids, c),
            (Engine::Burn(m), EngineCache::Burn(c)) => LanguageModel::forward_last(m.as_ref(), ids, c),
            _ => Err(mismatch()),
        }
    }

    fn fork(&self, cache: &EngineCache, n: usize) -> Result<EngineCache> {
        match (self, cache) {
            (Engine::Cpu(_), EngineCache::Cpu(c)) => Ok(EngineCache::Cpu(c.fork(n)?)),
            (Engine::Burn(_), EngineCache::Burn(c)) => Ok(EngineCache::Burn(c.fork(n))),
            _ => Err(mismatch()),
        }
    }

    fn retain(&self, cache: &mut EngineCache, rows: &[usize]) {
        match cache {
            EngineCache::Cpu(c) => c.retain_rows(rows),
            EngineCache::Burn(c) => c.retain_rows(rows),
        }
    }

    fn config(&self) -> &DecoderConfig {
        match self {
            Engine::Cpu(m) => &m.config,
            Engine::Burn(m) => &m.config,
        }
    }
}
