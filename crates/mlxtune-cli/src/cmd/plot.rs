//! `mlxtune train --plot FILE.svg`: the run's loss curve (training loss of every step from
//! `metrics.jsonl`, validation losses as points) as an SVG picture, written atomically.

use std::path::Path;

use mlxtune_engine::train::StepMetrics;
use plotters::prelude::*;

/// (step, loss) points.
pub type Points = Vec<(u64, f64)>;

/// The training losses in `<output>/metrics.jsonl`, in step order.
pub fn train_losses(output: &Path) -> anyhow::Result<Points> {
    let path = output.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let m: StepMetrics = serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
            Ok((m.step, m.loss))
        })
        .collect()
}

/// Refuses a target the picture cannot be written as (checked before a run starts).
pub fn check_target(file: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        file.extension().is_some_and(|e| e == "svg"),
        "--plot {}: the picture is written as SVG; name it *.svg",
        file.display()
    );
    Ok(())
}

/// Draws the curve into `file` (SVG).
pub fn loss_curve(file: &Path, train: &Points, valid: &Points) -> anyhow::Result<()> {
    check_target(file)?;
    anyhow::ensure!(!train.is_empty(), "--plot: the run has no steps to draw");
    let mut svg = String::new();
    draw(&mut svg, train, valid).map_err(|e| anyhow::anyhow!("--plot: {e}"))?;
    mlxtune_engine::fsutil::write_atomic(file, svg.as_bytes())?;
    Ok(())
}

fn draw(
    svg: &mut String,
    train: &Points,
    valid: &Points,
) -> Result<(), Box<dyn std::error::Error>> {
    let all = train.iter().chain(valid);
    let last_step = all.clone().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let root = SVGBackend::with_string(svg, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..last_step, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()?;
    let line = train.iter().map(|(s, l)| (*s as f64, *l));
    chart
        .draw_series(LineSeries::new(line, &BLUE))?
        .label("training")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    if !valid.is_empty() {
        let dots = valid
            .iter()
            .map(|(s, l)| Circle::new((*s as f64, *l), 4, RED.filled()));
        chart
            .draw_series(dots)?
            .label("validation")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, RED.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
