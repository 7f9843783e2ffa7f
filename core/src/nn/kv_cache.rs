//! The KV cache, passed explicitly to every forward. Each layer keeps an optional shared prefix
//! (one prompt's keys/values, batch 1) and the per-stream part (`[batch, kv_heads, len, hd]`).
//! N samples of one prompt prefill it once, then [`KvCache::fork`] makes that the shared prefix
//! and decodes N streams against it: no N re-prefills, and the prefix is stored once.
//!
//! The per-stream part grows in place inside preallocated capacity (doubling when full), so a
//! decode step writes one position instead of copying the whole cache.

use burn::prelude::*;

/// One layer's cache.
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// Shared prefix `[1, kv_heads, prefix_len, hd]` (keys, values).
    pub prefix: Option<(Tensor<4>, Tensor<4>)>,
    /// Per-stream storage `[batch, kv_heads, capacity, hd]`; the first `len` positions are valid.
    k: Option<Tensor<4>>,
    v: Option<Tensor<4>>,
}

/// The cache of all layers plus the number of positions stored per stream.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    /// Positions in the shared prefix.
    pub prefix_len: usize,
    /// Positions in the per-stream part.
    pub len: usize,
    pub batch: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers and `batch` streams.
    pub fn new(n_layers: usize, batch: usize) -> Self {
        KvCache {
            layers: (0..n_layers)
                .map(|_| LayerCache {
                    prefix: None,
                    k: None,
                    v: None,
                })
                .collect(),
            prefix_len: 0,
            len: 0,
            batch,
        }
    }

    /// Total positions seen by a stream (prefix + own).
    pub fn position(&self) -> usize {
        self.prefix_len + self.len
    }

    /// Turns a batch-1 cache into a shared prefix for `n` new streams.
    pub fn fork(&self, n: usize) -> KvCache {
        assert!(self.batch == 1, "only a single-stream cache can be forked");
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let own = match (&l.k, &l.v) {
                    (Some(k), Some(v)) if self.len > 0 => {
                        let [_, h, _, d] = k.dims();
                        Some((
                            k.clone().slice([0..1, 0..h, 0..self.len, 0..d]),
                            v.clone().slice([0..1, 0..h, 0..self.len, 0..d]),
                        ))
                    }
                    _ => None,
                };
                let prefix = match (&l.prefix, own) {
                    (Some((pk, pv)), Some((k, v))) => {
                        Some((Tensor::cat(vec![pk.clone(), k], 2), Tensor::cat(vec![pv.clone(), v], 2)))
                    }
                    (Some(p), None) => Some(p.clone()),
                    (None, own) => own,
                };
                LayerCache {
                    prefix,
                    k: None,
                    v: None,
                }
            })
            .collect();
        KvCache {
            layers,
            prefix_len: self.position(),
            len: 0,
            batch: n,
        }
    }
}

impl KvCache {
    /// Keeps only the per-stream rows `rows` (in that order), e.g. when streams finish.
    pub fn retain_rows(&mut self, rows: &[usize]) {
        for l in &mut self.layers {
            if let (Some(k), Some(v)) = (l.k.take(), l.v.take()) {
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(rows.iter().map(|&r| r as i32).collect::<Vec<_>>(), [rows.len()]),
                    &k.device(),
                );
                l.k = Some(k.select(0, idx.clone()));
                l.v = Some(v.select(0, idx));
            }
        }
        self.batch = rows.len();
    }
}

impl LayerCache {
    /// Writes `k`, `v` (`[batch, kv_heads, seq_len, hd]`) at positions `start..start+seq_len` of
    /// the per-stream part and returns views of the valid part `[.., 0..start+seq_len, ..]`.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>, start: usize) -> (Tensor<4>, Tensor<4>) {
        let [b, h, s, d] = k.dims();
        let end = start + s;
        let capacity = self.k.as_ref().map_or(0, |t| t.dims()[2]);
        if end > capacity {
            let new_cap = end.max(2 * capacity).max(64);
            let grow = |old: Option<Tensor<4>>, like: &Tensor<4>| {
                let fresh = Tensor::<4>::zeros([b, h, new_cap, d], &like.device());
                match old {
                    Some(o) if start > 0 => {
                        fresh.slice_assign([0..b, 0..h, 0..start, 0..d], o.slice([0..b, 0..h, 0..start, 0..d]))
                    }
                    _ => fresh,
                }
            };
            self.k = Some(grow(self.k.take(), &k));
            self.v = Some(grow(self.v.take(), &v));
        }
        let range = [0..b, 0..h, start..end, 0..d];
        let write = |store: Option<Tensor<4>>, new: Tensor<4>| match store {
            // Unique storage: flex and cubecl write in place.
            Some(t) => t.slice_assign(range.clone(), new),
            None => new,
        };
        let kc = write(self.k.take(), k);
        let vc = write(self.v.take(), v);
        let valid = [0..b, 0..h, 0..end, 0..d];
        let views = (kc.clone().slice(valid.clone()), vc.clone().slice(valid));
        self.k = Some(kc);
        self.v = Some(vc);
        views
    }
}
