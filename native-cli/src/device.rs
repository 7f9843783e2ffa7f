//! `--device auto|cpu|gpu`: which burn device runs the models.

use anyhow::{Result, anyhow};
use burn::tensor::{Device, DeviceKind};
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DeviceChoice {
    /// A GPU adapter if the machine has one (software adapters do not count), else the CPU.
    #[default]
    Auto,
    /// The CPU backend (burn flex plus sealong's quantized kernels).
    Cpu,
    /// The default wgpu adapter (Vulkan/Metal/DX12), software adapters included.
    Gpu,
}

/// Opens the chosen device; `gpu` is probed with a tiny computation so a missing adapter is a
/// clear error here, not a panic in the middle of a run.
pub fn select(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex()),
        DeviceChoice::Gpu => probe(Device::wgpu(DeviceKind::DefaultDevice)),
        DeviceChoice::Auto => {
            let gpus = std::panic::catch_unwind(Device::enumerate_physical).unwrap_or_default();
            match gpus.into_iter().next().and_then(|g| g.devices.first().cloned()) {
                Some(d) => probe(d).or_else(|_| Ok(Device::flex())),
                None => Ok(Device::flex()),
            }
        }
    }
}

fn probe(device: Device) -> Result<Device> {
    let d = device.clone();
    let ok = std::panic::catch_unwind(move || burn::tensor::Tensor::<1>::ones([4], &d).sum().into_scalar::<f32>());
    match ok {
        Ok(4.0) => Ok(device),
        Ok(v) => Err(anyhow!(
            "the GPU device computed a wrong result ({v}); use --device cpu"
        )),
        Err(_) => Err(anyhow!(
            "no usable GPU adapter (wgpu could not open one): install a Vulkan driver \
             (Debian: mesa-vulkan-drivers) or use --device cpu"
        )),
    }
}

/// A short name for logs and output records.
pub fn describe(device: &Device) -> String {
    if *device == Device::flex() {
        "cpu".into()
    } else {
        format!("{device:?}")
    }
}
