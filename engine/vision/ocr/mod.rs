//! Reading text on screen with the `tesseract` command-line tool.
//!
//! [`Ocr::read`] runs one plain pass over a frame or a region of it and returns
//! the words and visual lines with boxes in frame coordinates. [`Ocr::find`]
//! looks for a [`TextQuery`] and, while it is not found, retries with other
//! image [variants](OcrVariant) (upscaled, inverted dark boxes, binarised): real
//! application screens need them: tesseract misses small text and light labels
//! on dark buttons in a plain pass. Crop to a region whenever
//! there is one: tesseract reads a small crop better and much faster.
//!
//! tesseract runs as `tesseract stdin stdout -l LANG --psm 11 tsv` with
//! `OMP_THREAD_LIMIT=1` (twice as fast on two cores as its default threading),
//! a grayscale PNG on stdin, under a timeout; the process is killed when the
//! timeout fires or the future is dropped.

mod prepare;
mod query;
mod tsv;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::frame::Frame;
use crate::geometry::Rect;
use crate::vision::gray::GrayImage;

pub use prepare::OcrVariant;
pub use query::{QueryError, TextMatch, TextQuery};
pub use tsv::{OcrLine, OcrWord};

/// Why OCR failed.
#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    #[error(
        "`{binary}` was not found: install tesseract (Debian/Ubuntu: apt-get install tesseract-ocr tesseract-ocr-eng)"
    )]
    NotInstalled { binary: String },
    #[error(
        "tesseract has no data for language `{language}`: install it (Debian/Ubuntu: apt-get install tesseract-ocr-{language})"
    )]
    LanguageMissing { language: String },
    #[error("cannot run `{binary}`: {source}")]
    Spawn { binary: String, source: std::io::Error },
    #[error("tesseract did not finish within {timeout:?}")]
    Timeout { timeout: Duration },
    #[error("tesseract failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("tesseract wrote output that is not UTF-8")]
    NotUtf8,
    #[error("region {region} lies outside the {width}x{height} frame")]
    RegionOutside { region: Rect, width: u32, height: u32 },
    #[error("cannot encode the image for tesseract: {0}")]
    Encode(String),
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// The tesseract command and how to run it.
#[derive(Debug, Clone)]
pub struct Ocr {
    binary: PathBuf,
    language: String,
    timeout: Duration,
    page_segmentation: u8,
    variants: Vec<OcrVariant>,
    upscale_limit: u64,
}

impl Default for Ocr {
    fn default() -> Self {
        Ocr::new()
    }
}

/// Everything one pass read.
#[derive(Debug, Clone)]
pub struct OcrText {
    pub variant: OcrVariant,
    pub words: Vec<OcrWord>,
    /// Visual lines, top to bottom.
    pub lines: Vec<OcrLine>,
    pub elapsed: Duration,
}

impl OcrText {
    /// All text, one visual line per line.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// Where `query` matches in this text.
    pub fn find(&self, query: &TextQuery) -> Result<Option<TextMatch>, QueryError> {
        Ok(query::find_in_lines(&self.lines, &query.compile()?))
    }
}

/// One pass of [`Ocr::find`].
#[derive(Debug, Clone)]
pub struct OcrPass {
    pub variant: OcrVariant,
    /// What the pass read.
    pub text: String,
    pub words: usize,
    pub matched: bool,
    pub elapsed: Duration,
}

/// The outcome of [`Ocr::find`].
#[derive(Debug, Clone)]
pub struct OcrFind {
    /// The box of the match in frame coordinates (for a click), if found.
    pub found: Option<Rect>,
    /// The matched characters, if found.
    pub matched: Option<String>,
    /// Edits between the query and the matched characters (fuzzy queries).
    pub distance: Option<u32>,
    /// All text read in the last pass.
    pub text: String,
    /// The variant of the last pass (the one that matched, if any).
    pub variant: &'static str,
    /// Every pass, in order.
    pub passes: Vec<OcrPass>,
}

impl Ocr {
    /// `tesseract` from PATH, English, 30 s per pass, sparse-text segmentation,
    /// all variants, upscaling up to 1 Mpx.
    pub fn new() -> Ocr {
        Ocr {
            binary: PathBuf::from("tesseract"),
            language: "eng".into(),
            timeout: Duration::from_secs(30),
            page_segmentation: 11,
            variants: OcrVariant::ALL.to_vec(),
            upscale_limit: 1_000_000,
        }
    }

    /// The tesseract executable.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Ocr {
        self.binary = path.into();
        self
    }

    /// tesseract language code(s), e.g. `eng` or `eng+deu`.
    pub fn language(mut self, language: impl Into<String>) -> Ocr {
        self.language = language.into();
        self
    }

    /// Time limit for one tesseract run.
    pub fn timeout(mut self, timeout: Duration) -> Ocr {
        self.timeout = timeout;
        self
    }

    /// tesseract's `--psm` (11 = sparse text, the default here; 6 = one block).
    pub fn page_segmentation(mut self, psm: u8) -> Ocr {
        self.page_segmentation = psm;
        self
    }

    /// The variants [`Ocr::find`] tries, in order (empty = raw only).
    pub fn variants(mut self, variants: Vec<OcrVariant>) -> Ocr {
        self.variants = variants;
        self
    }

    /// Images with more pixels than this are not upscaled.
    pub fn upscale_limit(mut self, pixels: u64) -> Ocr {
        self.upscale_limit = pixels;
        self
    }

    /// One plain pass over `region` of `frame` (the whole frame when `None`).
    pub async fn read(&self, frame: &Frame, region: Option<Rect>) -> Result<OcrText, OcrError> {
        let (gray, area) = crop(frame, region)?;
        self.pass(&gray, area, OcrVariant::Raw).await
    }

    /// Read `region` with each variant in turn until `query` matches.
    pub async fn find(&self, frame: &Frame, region: Option<Rect>, query: &TextQuery) -> Result<OcrFind, OcrError> {
        let re = query.compile()?;
        let (gray, area) = crop(frame, region)?;
        let variants = if self.variants.is_empty() { vec![OcrVariant::Raw] } else { self.variants.clone() };
        let mut passes = Vec::new();
        let mut last_text = String::new();
        let mut last_variant = OcrVariant::Raw;
        for variant in variants {
            // Without upscaling, the upscaled variant would repeat the raw pass.
            if variant == OcrVariant::Upscaled && area.area() > self.upscale_limit {
                continue;
            }
            let read = self.pass(&gray, area, variant).await?;
            let found = query::find_in_lines(&read.lines, &re);
            let text = read.text();
            tracing::debug!(variant = variant.name(), %query, matched = found.is_some(), ms = read.elapsed.as_millis() as u64, "ocr pass");
            passes.push(OcrPass {
                variant,
                text: text.clone(),
                words: read.words.len(),
                matched: found.is_some(),
                elapsed: read.elapsed,
            });
            last_text = text;
            last_variant = variant;
            if let Some(m) = found {
                return Ok(OcrFind {
                    found: Some(m.bbox),
                    matched: Some(m.text),
                    distance: Some(m.distance),
                    text: last_text,
                    variant: variant.name(),
                    passes,
                });
            }
        }
        Ok(OcrFind {
            found: None,
            matched: None,
            distance: None,
            text: last_text,
            variant: last_variant.name(),
            passes,
        })
    }

    async fn pass(&self, gray: &GrayImage, area: Rect, variant: OcrVariant) -> Result<OcrText, OcrError> {
        let started = Instant::now();
        let prepared = prepare::prepare(gray, variant, self.upscale_limit);
        let png = prepared.image.to_png().map_err(|e| OcrError::Encode(e.to_string()))?;
        let tsv = self.run(png).await?;
        let placement = tsv::Placement { region: area, scale: prepared.scale };
        let raw = tsv::parse_words(&tsv, placement);
        let words: Vec<OcrWord> = raw.iter().map(|w| w.word.clone()).collect();
        let lines = tsv::build_lines(raw);
        Ok(OcrText { variant, words, lines, elapsed: started.elapsed() })
    }

    /// Run tesseract on PNG bytes and return its TSV output.
    async fn run(&self, png: Vec<u8>) -> Result<String, OcrError> {
        let binary = self.binary.display().to_string();
        let mut child = tokio::process::Command::new(&self.binary)
            .args(["stdin", "stdout", "-l", &self.language, "--psm", &self.page_segmentation.to_string(), "tsv"])
            .env("OMP_THREAD_LIMIT", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => OcrError::NotInstalled { binary: binary.clone() },
                _ => OcrError::Spawn { binary: binary.clone(), source },
            })?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A write error means tesseract exited early; its status says why.
                let _ = stdin.write_all(&png).await;
                let _ = stdin.shutdown().await;
            }
        };
        let work = async { tokio::join!(feed, child.wait_with_output()).1 };
        let output = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| OcrError::Timeout { timeout: self.timeout })?
            .map_err(|source| OcrError::Spawn { binary: binary.clone(), source })?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if !output.status.success() {
            if stderr.contains("Failed loading language") || stderr.contains("Error opening data file") {
                return Err(OcrError::LanguageMissing { language: self.language.clone() });
            }
            return Err(OcrError::Failed { status: output.status.to_string(), stderr });
        }
        String::from_utf8(output.stdout).map_err(|_| OcrError::NotUtf8)
    }
}

/// The grayscale region to read and its rectangle in the frame.
fn crop(frame: &Frame, region: Option<Rect>) -> Result<(GrayImage, Rect), OcrError> {
    let area = match region {
        None => frame.bounds(),
        Some(r) => r.intersect(&frame.bounds()).ok_or(OcrError::RegionOutside {
            region: r,
            width: frame.width(),
            height: frame.height(),
        })?,
    };
    let gray = GrayImage::from_frame_region(frame, area).ok_or(OcrError::RegionOutside {
        region: area,
        width: frame.width(),
        height: frame.height(),
    })?;
    Ok((gray, area))
}
