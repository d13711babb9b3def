//! `sunray tune plot`: an experiment's learning curves as a PNG, for a Slurm job that
//! mails or archives its results (no browser there). The same picture as the page's:
//! one line per trial, the best one thick and orange, ASHA's rungs dashed with their
//! cut-offs in red.

use std::convert::Infallible;

use embedded_graphics::mono_font::{ascii::FONT_7X13, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};

use crate::experiments::{Curve, ExperimentView};

/// Line colours (RGB) of trials other than the best, in trial order; the best is
/// [`BEST`].
pub const PALETTE: [[u8; 3]; 10] = [
    [0x19, 0x71, 0xc2],
    [0x2b, 0x8a, 0x3e],
    [0x86, 0x2e, 0x9c],
    [0x0b, 0x72, 0x85],
    [0x5c, 0x94, 0x0d],
    [0xd6, 0x33, 0x6c],
    [0x36, 0x4f, 0xc7],
    [0xa6, 0x1e, 0x4d],
    [0x49, 0x50, 0x57],
    [0x10, 0x98, 0xad],
];
pub const BEST: [u8; 3] = [0xe8, 0x59, 0x0c];

fn rgb(c: [u8; 3]) -> Rgb888 {
    Rgb888::new(c[0], c[1], c[2])
}
const INK: Rgb888 = Rgb888::new(0x55, 0x5d, 0x6e);
const GRID: Rgb888 = Rgb888::new(0xee, 0xf0, 0xf3);
const CUT: Rgb888 = Rgb888::new(0xb0, 0x00, 0x20);

/// An RGB picture to draw on.
struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;
    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let i = 3 * (p.y as usize * self.width as usize + p.x as usize);
                self.rgb[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// Round tick values covering `lo..=hi`, about `n` of them.
fn ticks(lo: f64, hi: f64, n: usize, whole: bool) -> Vec<f64> {
    // Also when either is NaN.
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = ((hi - lo) / n as f64).max(if whole { 1.0 } else { 0.0 });
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| (hi - lo) / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws `curves` of `metric` against `x` (the experiment gives the best trial and the
/// rungs) and returns the PNG's bytes.
pub fn render(
    exp: &ExperimentView,
    curves: &[Curve],
    metric: &str,
    x: &str,
    width: u32,
    height: u32,
) -> Vec<u8> {
    let mut c = Canvas {
        width,
        height,
        rgb: vec![255; (width * height * 3) as usize],
    };
    let (l, r, t, b) = (70.0, 20.0, 36.0, 46.0);
    let pts: Vec<[f64; 2]> = curves
        .iter()
        .flat_map(|c| c.points.iter().copied())
        .collect();
    let text = MonoTextStyle::new(&FONT_7X13, INK);
    let centre = TextStyleBuilder::new()
        .alignment(Alignment::Center)
        .baseline(Baseline::Top)
        .build();
    let right = TextStyleBuilder::new()
        .alignment(Alignment::Right)
        .baseline(Baseline::Middle)
        .build();
    let title = format!(
        "{}: {metric} against {x}, {} trials",
        exp.name,
        curves.len()
    );
    let _ = Text::with_baseline(&title, Point::new(l as i32, 10), text, Baseline::Top).draw(&mut c);
    let (w, h) = (width as f64, height as f64);
    if pts.is_empty() {
        let _ = Text::with_text_style(
            "no results yet",
            Point::new((w / 2.0) as i32, (h / 2.0) as i32),
            text,
            centre,
        )
        .draw(&mut c);
        return encode(&c);
    }
    let bounds = |i: usize| {
        let lo = pts.iter().map(|p| p[i]).fold(f64::INFINITY, f64::min);
        let hi = pts.iter().map(|p| p[i]).fold(f64::NEG_INFINITY, f64::max);
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, hi + 0.5)
        }
    };
    let ((x0, x1), (y0, y1)) = (bounds(0), bounds(1));
    let px = |v: f64| l + (v - x0) / (x1 - x0) * (w - l - r);
    let py = |v: f64| h - b - (v - y0) / (y1 - y0) * (h - t - b);
    let at = |x: f64, y: f64| Point::new(x.round() as i32, y.round() as i32);
    let line = |c: &mut Canvas, a: Point, z: Point, colour: Rgb888, width: u32| {
        let _ = Line::new(a, z)
            .into_styled(PrimitiveStyle::with_stroke(colour, width))
            .draw(c);
    };
    for v in ticks(y0, y1, 6, false) {
        line(&mut c, at(l, py(v)), at(w - r, py(v)), GRID, 1);
        let _ = Text::with_text_style(&label(v), at(l - 6.0, py(v)), text, right).draw(&mut c);
    }
    for v in ticks(x0, x1, 8, x == "training_iteration") {
        let _ = Text::with_text_style(&label(v), at(px(v), h - b + 6.0), text, centre).draw(&mut c);
    }
    line(&mut c, at(l, h - b), at(w - r, h - b), INK, 1);
    line(&mut c, at(l, t), at(l, h - b), INK, 1);
    let _ = Text::with_text_style(x, at((l + w - r) / 2.0, h - 20.0), text, centre).draw(&mut c);
    let _ = Text::with_baseline(
        metric,
        Point::new(8, (t - 14.0) as i32),
        text,
        Baseline::Top,
    )
    .draw(&mut c);
    if x == "training_iteration" {
        for rung in exp
            .rungs
            .iter()
            .filter(|g| (x0..=x1).contains(&g.milestone))
        {
            let xm = px(rung.milestone);
            let mut y = t;
            while y < h - b {
                line(&mut c, at(xm, y), at(xm, (y + 4.0).min(h - b)), INK, 1);
                y += 8.0;
            }
            if let Some(cut) = rung.cutoff.filter(|v| (y0..=y1).contains(v)) {
                line(&mut c, at(xm - 9.0, py(cut)), at(xm + 9.0, py(cut)), CUT, 3);
            }
        }
    }
    let best = exp.best.as_deref();
    let mut others = 0;
    let mut best_curve = None;
    for curve in curves {
        if Some(curve.trial_id.as_str()) == best {
            best_curve = Some(curve);
            continue;
        }
        draw_curve(
            &mut c,
            curve,
            rgb(PALETTE[others % PALETTE.len()]),
            2,
            &px,
            &py,
        );
        others += 1;
    }
    if let Some(curve) = best_curve {
        draw_curve(&mut c, curve, rgb(BEST), 4, &px, &py);
    }
    encode(&c)
}

fn draw_curve(
    c: &mut Canvas,
    curve: &Curve,
    colour: Rgb888,
    width: u32,
    px: &dyn Fn(f64) -> f64,
    py: &dyn Fn(f64) -> f64,
) {
    let at = |p: &[f64; 2]| Point::new(px(p[0]).round() as i32, py(p[1]).round() as i32);
    let style = PrimitiveStyle::with_stroke(colour, width);
    match curve.points.as_slice() {
        [] => {}
        [only] => {
            let p = at(only);
            let _ = Line::new(p - Point::new(2, 0), p + Point::new(2, 0))
                .into_styled(style)
                .draw(c);
        }
        pts => {
            for w in pts.windows(2) {
                let _ = Line::new(at(&w[0]), at(&w[1])).into_styled(style).draw(c);
            }
        }
    }
}

fn encode(c: &Canvas) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, c.width, c.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("writing to memory");
        w.write_image_data(&c.rgb).expect("writing to memory");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.0, 1.0, 5, false);
        assert_eq!(t.len(), 6);
        assert!(
            t.iter()
                .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
                .all(|(a, b)| (a - b).abs() < 1e-12),
            "{t:?}"
        );
        assert_eq!(
            ticks(1.0, 12.0, 8, false),
            vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
        );
        assert_eq!(
            ticks(1.0, 2.0, 8, true),
            vec![1.0, 2.0],
            "iterations are whole"
        );
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(12.0), "12");
        assert_eq!(label(2.5e-5), "2.5e-5");
    }
}
