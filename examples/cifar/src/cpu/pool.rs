//! ReLU then 2×2 max-pool (stride 2) in one pass, forward and backward, on plain slices.
//! max(0, max(window)) is relu-then-pool; the gradient flows to the window's first
//! largest input when that is positive, as relu's and max-pool's gradients do in turn.

use rayon::prelude::*;

/// Marks an output whose window held no positive value: no gradient flows back.
const NONE: u8 = u8::MAX;

/// Planes of at least this many inputs per task: below, rayon costs more than it saves.
const MIN_TASK: usize = 8 * 1024;

/// Output `[planes, h/2, w/2]` of input `[planes, h, w]` (an odd last row or column is
/// dropped, as PyTorch does), and for each output which of its window's four inputs
/// (`2 * row + column`) won, or [`NONE`].
pub fn forward(planes: usize, h: usize, w: usize, x: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0.0; planes * oh * ow];
    let mut from = vec![NONE; y.len()];
    let per_task = MIN_TASK.div_ceil(h * w).max(1);
    y.par_chunks_mut(oh * ow)
        .zip(from.par_chunks_mut(oh * ow))
        .zip(x.par_chunks(h * w))
        .with_min_len(per_task)
        .for_each(|((y, from), x)| {
            for r in 0..oh {
                let (top, bottom) = (&x[2 * r * w..][..w], &x[(2 * r + 1) * w..][..w]);
                for c in 0..ow {
                    let window = [top[2 * c], top[2 * c + 1], bottom[2 * c], bottom[2 * c + 1]];
                    let (mut best, mut won) = (0.0f32, NONE);
                    for (i, v) in window.into_iter().enumerate() {
                        if v > best {
                            (best, won) = (v, i as u8);
                        }
                    }
                    y[r * ow + c] = best;
                    from[r * ow + c] = won;
                }
            }
        });
    (y, from)
}

/// The input's gradient `[planes, h, w]` given the output's `dy` and [`forward`]'s winners.
pub fn backward(planes: usize, h: usize, w: usize, from: &[u8], dy: &[f32]) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0.0; planes * h * w];
    let per_task = MIN_TASK.div_ceil(h * w).max(1);
    dx.par_chunks_mut(h * w)
        .zip(from.par_chunks(oh * ow))
        .zip(dy.par_chunks(oh * ow))
        .with_min_len(per_task)
        .for_each(|((dx, from), dy)| {
            for (i, (&won, &d)) in from.iter().zip(dy).enumerate() {
                if won != NONE {
                    let (r, c) = (i / ow, i % ow);
                    let (dr, dc) = (won as usize / 2, won as usize % 2);
                    dx[(2 * r + dr) * w + 2 * c + dc] = d;
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_the_positive_maximum_and_routes_its_gradient() {
        // One 3×4 plane (the odd last row is dropped): two windows.
        #[rustfmt::skip]
        let x = [
            1.0, -2.0,   -1.0, -3.0,
            3.0,  3.0,   -0.5,  0.0,
            9.0,  9.0,    9.0,  9.0,
        ];
        let (y, from) = forward(1, 3, 4, &x);
        assert_eq!(y, [3.0, 0.0]);
        // The first of two equal maxima wins; a window with nothing positive has none.
        assert_eq!(from, [2, NONE]);
        let dx = backward(1, 3, 4, &from, &[5.0, 7.0]);
        #[rustfmt::skip]
        assert_eq!(dx, [
            0.0, 0.0, 0.0, 0.0,
            5.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ]);
    }
}
