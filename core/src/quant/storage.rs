//! Where a [`super::QuantMatrix`] keeps its scales and quants: [`Stored`], a slice shared by
//! clones, either an allocation of its own or a range of a [`Region`] that many matrices share.
//!
//! Why a region: decoding one token reads every weight once, so on the CPU it is a stream
//! through the whole model. With 4 KiB pages that stream takes a TLB miss every 4 KiB, and the
//! hardware prefetchers start again at every page. [`pack`] copies a model's matrices into one
//! anonymous mapping that the kernel is asked to back with 2 MiB pages (`MADV_HUGEPAGE`, before
//! any page is touched). Small models need the one region: SmolLM2's matrices are 0.1–1 MiB
//! each, too small for a 2 MiB page of their own. (llama.cpp gets the same from the page
//! cache's large folios when it maps a GGUF.) On the AMD EPYC this decoded the 135M model's
//! Q8_0 file about 29% faster in exact precision, and a model of Llama-3.2-1B's shape 3–7%
//! faster, at the price of a slower load (BENCHMARKS.md, "Weights on 2 MiB pages").
//!
//! Natively only: a wasm build keeps each matrix in its own allocation.

use std::ops::Deref;
use std::sync::Arc;

/// A slice of `T` shared by clones.
#[derive(Clone)]
pub struct Stored<T: Copy> {
    inner: Inner<T>,
}

#[derive(Clone)]
enum Inner<T: Copy> {
    Own(Arc<[T]>),
    /// `len` values at byte `offset` of the region, aligned for `T`.
    #[cfg(not(target_family = "wasm"))]
    Packed {
        region: Arc<Region>,
        offset: usize,
        len: usize,
    },
}

impl<T: Copy> Deref for Stored<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.inner {
            Inner::Own(a) => a,
            #[cfg(not(target_family = "wasm"))]
            Inner::Packed { region, offset, len } => {
                // SAFETY: `pack` wrote `len` values of `T` at `offset`, aligned for `T`, inside
                // the region's mapping, which lives as long as this `Arc` and is never written
                // again.
                unsafe { std::slice::from_raw_parts(region.map.as_ptr().add(*offset).cast::<T>(), *len) }
            }
        }
    }
}

impl<T: Copy> From<Vec<T>> for Stored<T> {
    fn from(v: Vec<T>) -> Self {
        Stored {
            inner: Inner::Own(v.into()),
        }
    }
}

impl<T: Copy> From<&[T]> for Stored<T> {
    fn from(v: &[T]) -> Self {
        Stored {
            inner: Inner::Own(Arc::from(v)),
        }
    }
}

impl<T: Copy> Stored<T> {
    #[cfg(not(target_family = "wasm"))]
    fn packed(region: &Arc<Region>, offset: usize, len: usize) -> Self {
        Stored {
            inner: Inner::Packed {
                region: region.clone(),
                offset,
                len,
            },
        }
    }

    /// Whether this slice lies in a shared region (made by [`pack`]).
    pub fn is_packed(&self) -> bool {
        match &self.inner {
            Inner::Own(_) => false,
            #[cfg(not(target_family = "wasm"))]
            Inner::Packed { .. } => true,
        }
    }
}

/// An anonymous mapping advised for 2 MiB pages, written once by [`pack`].
#[cfg(not(target_family = "wasm"))]
pub struct Region {
    map: memmap2::MmapMut,
}

/// The size of the pages asked for, and the alignment of the region's first byte.
#[cfg(not(target_family = "wasm"))]
const HUGE_PAGE: usize = 2 << 20;

/// The heap is trimmed each time this much storage has been copied: the peak while packing is
/// the model plus this (or its largest matrix), and trimming after every small matrix took
/// longer than the copies.
#[cfg(not(target_family = "wasm"))]
const TRIM_EVERY: usize = 16 << 20;

/// Each slice starts on a cache line.
#[cfg(not(target_family = "wasm"))]
const SLICE_ALIGN: usize = 64;

/// Copies the scales and quants of `mats` into one region on 2 MiB pages and points the
/// matrices at it. Each old allocation is dropped as soon as it is copied (unless a clone
/// elsewhere still holds it) and the heap is trimmed every [`TRIM_EVERY`] bytes, so the peak
/// is about the model plus 16 MiB or its largest matrix. Matrices that share storage (clones)
/// share one copy afterwards. Already packed matrices are left as they are. If the mapping
/// cannot be made, nothing changes.
pub fn pack(mats: &mut [&mut super::QuantMatrix]) {
    #[cfg(not(target_family = "wasm"))]
    {
        use std::collections::HashMap;
        let span = |n: usize, size: usize| (n * size).next_multiple_of(SLICE_ALIGN);
        let key = |m: &super::QuantMatrix| m.qs.as_ptr() as usize;
        // One copy per distinct storage (clones share their pointers).
        let mut sizes: HashMap<usize, usize> = HashMap::new();
        for m in mats.iter().filter(|m| !m.qs.is_packed()) {
            sizes.insert(key(m), span(m.scales.len(), 4) + span(m.qs.len(), 1));
        }
        let total: usize = sizes.values().sum();
        if total == 0 {
            return;
        }
        let Ok(mut map) = memmap2::MmapMut::map_anon(total + HUGE_PAGE) else {
            return;
        };
        // Advice only: without it (another OS, THP off) the region works on small pages.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        // The first 2 MiB boundary in the mapping: the region's pages line up with huge pages.
        let base = map.as_mut_ptr();
        let mut at = (base as usize).next_multiple_of(HUGE_PAGE) - base as usize;
        let region = Arc::new(Region { map });
        let mut copies: HashMap<usize, (usize, usize)> = HashMap::new();
        // Bytes given up since the heap was last trimmed (a clone's storage counts as freed
        // once per clone: an early trim costs nothing).
        let mut freed = 0;
        for m in mats.iter_mut().filter(|m| !m.qs.is_packed()) {
            let (ns, nq) = (m.scales.len(), m.qs.len());
            let (s_off, q_off) = *copies.entry(key(m)).or_insert_with(|| {
                let s_off = at;
                let q_off = s_off + span(ns, 4);
                at = q_off + span(nq, 1);
                // SAFETY: `[s_off, at)` lies inside the mapping (`total` counts every span, and
                // the 2 MiB slack covers the start's alignment); no `Stored` points at it yet, so
                // nothing reads it while it is written. `s_off` is a multiple of 64 from a
                // 2 MiB boundary, so the f32 scales are aligned.
                unsafe {
                    std::ptr::copy_nonoverlapping(m.scales.as_ptr(), base.add(s_off).cast::<f32>(), ns);
                    std::ptr::copy_nonoverlapping(m.qs.as_ptr(), base.add(q_off), nq);
                }
                (s_off, q_off)
            });
            m.scales = Stored::packed(&region, s_off, ns);
            m.qs = Stored::packed(&region, q_off, nq);
            m.device_copies = Default::default();
            freed += ns * 4 + nq;
            if freed >= TRIM_EVERY {
                release_freed_heap();
                freed = 0;
            }
        }
        release_freed_heap();
    }
    #[cfg(target_family = "wasm")]
    let _ = mats;
}

/// glibc keeps freed heap memory for later allocations, so a copied matrix's old storage would
/// stay in the RSS (a packed model would peak at twice its size); this returns its whole pages
/// to the kernel.
#[cfg(not(target_family = "wasm"))]
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of glibc's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;
    use crate::quant::{QuantMatrix, WeightFormat, kernels, raw_dots};

    fn span(s: &[u8]) -> std::ops::Range<usize> {
        s.as_ptr() as usize..s.as_ptr() as usize + s.len()
    }

    /// Packed matrices hold the same bits in aligned, disjoint slices of one region that starts
    /// on a 2 MiB boundary; clones share one copy; packing again moves nothing.
    #[test]
    fn packed_matrices_keep_their_values_and_clones_share_one_copy() {
        let a = kernels::tests::random_matrix(WeightFormat::Q8_0, 40, 64, 1);
        let b = raw_dots::tests::random_rows(WeightFormat::Q6K, 8, 256, 2);
        let c = kernels::tests::random_matrix(WeightFormat::Q4_1, 3, 32, 3);
        let want: Vec<Vec<f32>> = [&a, &b, &c].iter().map(|m| m.to_f32()).collect();
        let (mut pa, mut pb, mut pc) = (a.clone(), b, c);
        let mut pa2 = a.clone();
        drop(a);
        pack(&mut [&mut pa, &mut pb, &mut pa2, &mut pc]);
        let all: [&QuantMatrix; 4] = [&pa, &pb, &pc, &pa2];
        assert!(all.iter().all(|m| m.qs.is_packed() && m.scales.is_packed()));
        for (m, w) in [&pa, &pb, &pc].iter().zip(&want) {
            let got = m.to_f32();
            assert!(
                got.iter().zip(w).all(|(g, w)| g.to_bits() == w.to_bits()),
                "{:?}",
                m.format
            );
        }
        assert_eq!(pa.qs.as_ptr(), pa2.qs.as_ptr(), "a clone shares the copy");
        assert_eq!(pa.scales.as_ptr(), pa2.scales.as_ptr());
        assert_eq!(
            pa.scales.as_ptr() as usize % HUGE_PAGE,
            0,
            "the first slice opens the region"
        );
        let mut spans = Vec::new();
        for m in [&pa, &pb, &pc] {
            let scales: &[f32] = &m.scales;
            // SAFETY: viewing the f32 slice's own bytes.
            let s = unsafe { std::slice::from_raw_parts(scales.as_ptr().cast::<u8>(), 4 * scales.len()) };
            for r in [span(s), span(&m.qs)] {
                assert_eq!(r.start % SLICE_ALIGN, 0, "slices start on a cache line");
                spans.push(r);
            }
        }
        spans.sort_by_key(|r| r.start);
        assert!(
            spans.windows(2).all(|w| w[0].end <= w[1].start),
            "slices overlap: {spans:?}"
        );
        let before = pb.qs.as_ptr();
        pack(&mut [&mut pb]);
        assert_eq!(before, pb.qs.as_ptr(), "a packed matrix is not copied again");
    }

    /// The region's mapping is one the kernel may back with 2 MiB pages (`THPeligible` in
    /// `/proc/self/smaps`: its advice is on a range holding an aligned 2 MiB page), unless
    /// transparent huge pages are off on this machine.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_region_is_advised_for_huge_pages() {
        let setting = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if setting.is_empty() || setting.contains("[never]") {
            eprintln!("transparent huge pages are off here ({setting:?}): nothing to check");
            return;
        }
        // More than 2 MiB, so that the mapping spans a whole aligned huge page.
        let mut m = kernels::tests::random_matrix(WeightFormat::Q8_0, 2048, 1024, 4);
        pack(&mut [&mut m]);
        let at = m.qs.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        let mut eligible = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&at);
            } else if inside && let Some(v) = line.strip_prefix("THPeligible:") {
                eligible = Some(v.trim().to_string());
            }
        }
        assert_eq!(eligible.as_deref(), Some("1"), "the region's mapping ({setting:?})");
    }
}
