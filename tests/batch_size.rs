//! `--batch-size auto` sizes batches by an estimate of what one image holds on the device
//! (`clip::vision::forward_vv_peak_elements`). Here the kernel measures the V-V forward's real
//! peak on the CPU (the process's high-water mark, VmHWM, reset before each pass) and the
//! estimate must bound it from above without being far off. One test in its own process, so
//! no other test's allocations move the high-water mark.

use promptad::artifact::random_backbone;
use promptad::clip::vision::forward_vv_peak_elements;
use promptad::runtime::{peak_rss_mib, reset_peak_rss, rss_mib};
use tch::{Device, Kind, Tensor};

/// The growth of the process's peak RSS over one forward pass of `batch` images, in MiB.
fn forward_peak_growth(clip: &promptad::clip::Clip, batch: i64) -> f64 {
    let images = Tensor::randn([batch, 3, 240, 240], (Kind::Float, Device::Cpu));
    // Freed memory goes back to the kernel first, so that the pass must fault in what it uses.
    unsafe { libc::malloc_trim(0) };
    assert!(reset_peak_rss(), "this kernel lets a process reset its peak RSS");
    let before = rss_mib();
    let features = tch::no_grad(|| clip.visual.forward_vv(&images, &[3, 8])).unwrap();
    let peak = peak_rss_mib();
    drop(features);
    peak - before
}

#[test]
fn the_auto_batch_estimate_bounds_the_forwards_measured_peak() {
    tch::set_num_threads(1);
    let (clip, _) = random_backbone(3, Device::Cpu).unwrap();
    forward_peak_growth(&clip, 2); // one-time allocations of the first pass
    let estimate_mib = forward_vv_peak_elements(&clip.config) * 4.0 / (1 << 20) as f64;
    // Per image: the growth from 4 to 20 images, so that what a pass holds whatever its batch
    // (weights' packed copies, thread buffers) cancels out. The best of three, as other
    // threads of the test harness may allocate meanwhile.
    let per_image = (0..3)
        .map(|_| (forward_peak_growth(&clip, 20) - forward_peak_growth(&clip, 4)) / 16.0)
        .fold(f64::INFINITY, f64::min);
    eprintln!("demo-vit-240 V-V forward: measured {per_image:.2} MiB per image, estimated {estimate_mib:.2}");
    assert!(per_image <= estimate_mib, "the estimate must bound the peak: {per_image:.2} > {estimate_mib:.2} MiB");
    assert!(
        per_image >= estimate_mib / 4.0,
        "the estimate is far above the peak: {per_image:.2} ≪ {estimate_mib:.2} MiB"
    );
}
