//! `tern-bench plot`: PNG charts of runs saved with `--samples`: the latency CDF of every run
//! on one chart (tern and its peer side by side) and the throughput of every second.
//!
//! Text is drawn with ab_glyph from a TrueType file read at run time (`--font`, by default
//! DejaVu Sans from Debian's fonts-dejavu-core), so no fontconfig or freetype is linked.

use std::path::{Path, PathBuf};

use clap::Args;
use plotters::prelude::*;

use crate::error::{BenchError, Result};
use crate::samples::Samples;

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The name the font is registered under for plotters.
const FONT_NAME: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 560);
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
];

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Sample files written by `--samples` (one series each, in this order).
    #[arg(required = true)]
    pub samples: Vec<PathBuf>,
    /// Directory the PNG files go to (created if missing).
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// File name stem: writes NAME-cdf.png and NAME-throughput.png.
    #[arg(long)]
    pub name: String,
    /// Chart title [default: NAME].
    #[arg(long)]
    pub title: Option<String>,
    /// TrueType font for the text.
    #[arg(long, default_value = DEFAULT_FONT)]
    pub font: PathBuf,
}

pub fn run(a: &PlotArgs) -> Result<()> {
    let series = a
        .samples
        .iter()
        .map(|p| Samples::read(p))
        .collect::<Result<Vec<_>>>()?;
    load_font(&a.font)?;
    std::fs::create_dir_all(&a.out).map_err(|e| BenchError::io(&a.out, e))?;
    let title = a.title.clone().unwrap_or_else(|| a.name.clone());
    let cdf = a.out.join(format!("{}-cdf.png", a.name));
    draw_cdf(&cdf, &title, &series).map_err(|e| plot_error(&cdf, e))?;
    let tput = a.out.join(format!("{}-throughput.png", a.name));
    draw_throughput(&tput, &title, &series).map_err(|e| plot_error(&tput, e))?;
    crate::say!("{}\n{}", cdf.display(), tput.display())?;
    Ok(())
}

fn load_font(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| {
        BenchError::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!("{e} (a TrueType font: apt-get install fonts-dejavu-core, or --font)"),
            ),
        )
    })?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT_NAME, FontStyle::Normal, bytes).map_err(|_| {
        BenchError::Arg {
            arg: "font",
            why: format!("{} is not a TrueType font", path.display()),
        }
    })
}

fn plot_error(path: &Path, e: Box<dyn std::error::Error>) -> BenchError {
    BenchError::io(path, std::io::Error::other(e.to_string()))
}

/// Quantile q as "nines": 0.9 -> 1, 0.99 -> 2; the axis on which tails are visible.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

fn nines_label(y: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-*y));
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn draw_cdf(
    path: &Path,
    title: &str,
    series: &[Samples],
) -> Result<(), Box<dyn std::error::Error>> {
    // The maximum (q = 1) has no place on the nines axis; it is in the tables.
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.cdf
                .iter()
                .filter(|(us, q)| *q < 1.0 && *us > 0.0)
                .map(|(us, q)| (*us, nines(*q)))
                .collect()
        })
        .collect();
    let all = points.iter().flatten();
    let lo = all.clone().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let hi = all.clone().map(|p| p.0).fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo * 0.8, hi * 1.25)
    } else {
        (1.0, 1000.0)
    };
    let y_max = points
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(1.0, f64::max)
        .ceil();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: latency CDF"), (FONT_NAME, 22).into_font())
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("latency (log scale)")
        .y_desc("quantile")
        .y_labels(y_max as usize + 1)
        .y_label_formatter(&nines_label)
        .x_label_formatter(&latency_label)
        .label_style((FONT_NAME, 14))
        .draw()?;
    for (i, (s, pts)) in series.iter().zip(&points).enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT_NAME, 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A latency axis label (the axis is in µs): only 1, 2 and 5 of each decade are named, in
/// the unit that keeps them short ("200 µs", "5 ms", "1 s"); the log axis offers every
/// 1..9 of a decade, whose full numbers ran into each other.
fn latency_label(us: &f64) -> String {
    if !us.is_finite() || *us <= 0.0 {
        return String::new();
    }
    let mantissa = us / 10f64.powf(us.log10().floor());
    if ![1.0, 2.0, 5.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 0.01 * m)
    {
        return String::new();
    }
    if *us >= 1e6 {
        format!("{:.0} s", us / 1e6)
    } else if *us >= 1e3 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn draw_throughput(
    path: &Path,
    title: &str,
    series: &[Samples],
) -> Result<(), Box<dyn std::error::Error>> {
    let seconds = series
        .iter()
        .map(|s| s.mb_per_s.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let y_max = series
        .iter()
        .flat_map(|s| s.mb_per_s.iter().copied())
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.15;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: throughput per second"),
            (FONT_NAME, 22).into_font(),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..seconds as f64, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("second of the measured window")
        .y_desc("MB/s acknowledged")
        .label_style((FONT_NAME, 14))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Each value is the second that ends at t + 1.
        let pts = s
            .mb_per_s
            .iter()
            .enumerate()
            .map(|(t, v)| (t as f64 + 1.0, *v));
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT_NAME, 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_labels() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&3.0), "99.9%");
        assert_eq!(nines_label(&0.0), "0%");
    }

    #[test]
    fn latency_axis_names_1_2_5_of_each_decade_in_a_short_unit() {
        assert_eq!(latency_label(&200.0), "200 µs");
        assert_eq!(latency_label(&5000.0), "5 ms");
        assert_eq!(latency_label(&20_000.000_000_004), "20 ms");
        assert_eq!(latency_label(&1_000_000.0), "1 s");
        assert_eq!(latency_label(&70_000.0), "");
        assert_eq!(latency_label(&0.0), "");
    }

    #[test]
    fn draws_both_charts_when_a_font_is_installed() {
        let font = Path::new(DEFAULT_FONT);
        if !font.exists() {
            eprintln!("skipped: no {DEFAULT_FONT}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut h = crate::load::new_histogram();
        for us in 1..=2000u64 {
            h.record(us * 1000).unwrap();
        }
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        Samples::new("tern", &h, &[1_000_000, 2_000_000])
            .write(&a)
            .unwrap();
        Samples::new("peer", &h, &[500_000]).write(&b).unwrap();
        let args = PlotArgs {
            samples: vec![a, b],
            out: dir.path().join("out"),
            name: "shape".into(),
            title: None,
            font: font.to_path_buf(),
        };
        run(&args).unwrap();
        for f in ["shape-cdf.png", "shape-throughput.png"] {
            let bytes = std::fs::read(dir.path().join("out").join(f)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{f}");
        }
    }
}
