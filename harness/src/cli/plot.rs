//! `plot`: a latency run's histograms and CDFs as SVG.

use std::path::PathBuf;

use crate::format::exit::Exit;
use crate::format::output;

fn usage(msg: impl std::fmt::Display) -> Exit {
    say!("phc-harness: {msg}");
    Exit::Usage
}

/// Arguments of `plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// A latency document (`latency --format json > latency.json`).
    pub latency_json: PathBuf,
    /// Where to write latency-histogram.svg and latency-cdf.svg (default: beside the file).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `phc-harness plot`: a latency run's histogram per method and its CDFs, as SVG. The input is
/// a regular file (a FIFO, a device or `/dev/stdin` on a pipe is refused) of at most
/// `compare::MAX_LATENCY_BYTES`. The plots go into `--out` (a folder, made if missing) or else
/// beside the input, only when the input path is itself a regular file (not a symlink, so
/// `/dev/stdin` never puts them into `/dev`). A symlink or anything but a regular file where a
/// plot goes is refused, and each plot replaces its file atomically.
pub fn plot(args: PlotArgs) -> Exit {
    let input = &args.latency_json;
    let text = match phc::input::read_text(
        input,
        crate::regress::compare::MAX_LATENCY_BYTES,
        phc::input::Links::Follow,
    ) {
        Ok(t) => t,
        Err(e) => return usage(format!("{}: {e}", input.display())),
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return usage(format!("{}: not JSON: {e}", input.display())),
    };
    let ds = crate::judge::plot_latency::distributions(&doc);
    if ds.is_empty() {
        return usage(format!(
            "{}: no round-trip histogram in it (not a latency document?)",
            input.display()
        ));
    }
    let dir = match &args.out {
        Some(d) => {
            match std::fs::metadata(d) {
                Ok(m) if m.is_dir() => {}
                Ok(m) => {
                    return usage(format!("{}: not a folder ({})", d.display(), phc::input::file_kind(&m)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Err(e) = std::fs::create_dir_all(d) {
                        return usage(format!("{}: {e}", d.display()));
                    }
                }
                Err(e) => return usage(format!("{}: {e}", d.display())),
            }
            d.clone()
        }
        None => {
            match std::fs::symlink_metadata(input) {
                Ok(m) if m.is_file() => {}
                _ => {
                    return usage(format!(
                        "{}: not a regular file itself (a symlink?): give --out for the plots",
                        input.display()
                    ))
                }
            }
            input
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_owned()
        }
    };
    let title = doc["device"].as_str().unwrap_or("latency");
    let plots = [
        ("latency-histogram.svg", crate::judge::plot_latency::histogram_svg(title, &ds)),
        ("latency-cdf.svg", crate::judge::plot_latency::cdf_svg(title, &ds)),
    ];
    for (name, _) in &plots {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.is_file() => {
                return usage(format!(
                    "{}: {}, not replaced by a plot",
                    path.display(),
                    phc::input::file_kind(&m)
                ))
            }
            _ => {}
        }
    }
    for (name, svg) in plots {
        let path = dir.join(name);
        if let Err(e) = crate::format::files::write_file_atomic(&path, svg.as_bytes()) {
            return usage(format!("{}: {e}", path.display()));
        }
        output::out(&format!("{}\n", path.display()));
    }
    Exit::Ok
}
