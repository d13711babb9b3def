//! The seed's second program in Rust: a CIFAR-10 CNN (burn), its data, its training
//! loop; `examples/tune_cifar.rs` tunes it with sunray-tune.

pub mod cpu;
pub mod data;
pub mod model;
pub mod train;

use burn::prelude::Device;

/// The device a trial computes on: the GPU the trial holds when built with `cuda` and
/// given one (`CUDA_VISIBLE_DEVICES` names exactly it, so it is index 0), else the CPU
/// (burn's flex backend, with as many threads as the trial holds CPUs).
pub fn device(use_gpu: bool, cpus: usize) -> Device {
    if use_gpu {
        #[cfg(feature = "cuda")]
        return Device::cuda(0).autodiff();
        #[cfg(not(feature = "cuda"))]
        eprintln!("this binary was built without the `cuda` feature: training on the CPU");
    }
    keep_freed_memory();
    // The global pool is built once per process; later calls keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(cpus.max(1))
        .build_global();
    Device::flex().autodiff()
}

/// Has glibc keep freed memory for reuse instead of returning every block over 128 KiB
/// to the kernel: a training step frees and allocates the same buffers each time, and
/// taking them back costs a page fault per 4 KiB (a fifth of a small batch's step).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
