//! Times one MBR kernel launch against the plain-burn twin (on the same wgpu device and on the
//! CPU backend `flex`) and checks they agree.
//!
//! `cargo run --release -p sealong-shaders --example mbr_timing -- [B N D]` (default 1000 32 1024).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DeviceKind, Distribution};
use sealong_shaders::{MbrOutput, mbr_scores, mbr_scores_reference};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("B N D as integers"))
        .collect();
    let [b, n, d] = match args[..] {
        [b, n, d] => [b, n, d],
        [] => [1000, 32, 1024],
        _ => panic!("usage: mbr_timing [B N D]"),
    };
    let gpu = Device::wgpu_options()
        .device_kind(DeviceKind::DefaultDevice)
        .init()
        .expect("wgpu adapter");
    let cpu = Device::flex();
    let raw = Tensor::<3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &cpu);
    let norm = raw.clone().powf_scalar(2.0).sum_dim(2).sqrt();
    let values = (raw / norm).into_data();

    let time = |label: &str, device: &Device, run: fn(Tensor<3>) -> Result<MbrOutput, sealong_shaders::MbrError>| {
        let input = Tensor::<3>::from_data(values.clone(), device);
        device.sync().expect("upload");
        // The first run compiles (wgpu) and warms up; the second is timed.
        let warm = run(input.clone()).expect("run");
        let _ = warm.chosen.into_data();
        let start = Instant::now();
        let out = run(input).expect("run");
        device.sync().expect("sync");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label:<16} B={b} N={n} D={d}: {:9.2} ms ({:.2} GFLOP/s)",
            secs * 1e3,
            2.0 * (b * n * n * d) as f64 / secs / 1e9
        );
        out
    };
    let kernel = time("kernel (wgpu)", &gpu, mbr_scores);
    let twin_gpu = time("twin (wgpu)", &gpu, mbr_scores_reference);
    let twin_cpu = time("twin (flex)", &cpu, mbr_scores_reference);

    let read = |t: Tensor<2>| t.try_into_vec_as::<f32>().expect("read");
    let k = read(kernel.scores);
    for (label, other) in [
        ("twin (wgpu)", read(twin_gpu.scores)),
        ("twin (flex)", read(twin_cpu.scores)),
    ] {
        let dmax = k.iter().zip(&other).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        println!("scores max |kernel - {label}| = {dmax:.2e}");
    }
    let chosen = |t: Tensor<1, Int>| t.try_into_vec_as::<i64>().expect("read");
    let same = chosen(kernel.chosen) == chosen(twin_cpu.chosen);
    println!("chosen identical to twin (flex): {same}");
}
