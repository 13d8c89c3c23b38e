//! Page OCR with PaddleOCR's PP-OCRv4 detection and recognition models, run by `tract-onnx`.
//!
//! Pipeline for one greyscale page:
//! 1. DB text detection on the page scaled so its longer side is at most `DET_MAX_SIDE` (both sides
//!    rounded to multiples of 32);
//! 2. DB post-processing: threshold the probability map, dilate by 2x2, label 8-connected
//!    components, take each component's axis-aligned bounding box, score it by the mean probability
//!    inside it, expand ("unclip") it and scale it back to page coordinates;
//! 3. recognition of each box cropped from the full-resolution page (height 48, aspect kept),
//!    padded on the right to one of a few width buckets so that one optimised tract plan per
//!    bucket can be reused (one line per run: single-threaded tract is faster per line at batch
//!    size 1 than with batches);
//! 4. CTC greedy decoding with the dictionary stored in the recognition model's ONNX metadata.
//!
//! Only std, `tract-onnx` and `thiserror` are used. tract runs single-threaded here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

/// File name of the detection model inside the model directory.
pub const DET_MODEL_FILE: &str = "ch_PP-OCRv4_det_infer.onnx";
/// File name of the recognition model inside the model directory.
pub const REC_MODEL_FILE: &str = "ch_PP-OCRv4_rec_infer.onnx";

/// Longer side of the page as fed to the detector (before rounding to a multiple of 32).
const DET_MAX_SIDE: u32 = 1280;
/// Probability threshold that makes a detector pixel "text".
const DET_THRESHOLD: f32 = 0.3;
/// Minimum mean probability inside a candidate box.
const DET_BOX_THRESHOLD: f32 = 0.5;
/// DB unclip ratio: a box is expanded on every side by area * ratio / perimeter.
const DET_UNCLIP_RATIO: f32 = 1.6;
/// Boxes whose shorter side is below this (detector pixels, before unclipping) are dropped.
const DET_MIN_SIDE: f32 = 3.0;
/// Upper bound on candidate components considered per page.
const DET_MAX_CANDIDATES: usize = 1000;

/// Height of a recognition input line.
const REC_HEIGHT: usize = 48;
/// Recognition input widths; a line is padded on the right to the smallest bucket that holds it.
/// Lines wider than the last bucket are squeezed to it. Each bucket used costs a plan (≈0.2 s
/// to optimise, once per reader); a run costs about in proportion to its width. Measured on the
/// public scans (≈60 lines a page, 60 % of them labels under 160 px), one run: these five
/// buckets took 17 % less time a page than nine finer ones (more plans) and 13 % less than
/// buckets starting at 320 (more padding).
const REC_WIDTH_BUCKETS: [usize; 5] = [160, 320, 640, 1280, 2560];
/// Value used for the right padding of recognition inputs, in normalised units
/// (0.0 = mid grey, as PaddleOCR does; 1.0 would be white).
const REC_PAD_VALUE: f32 = 0.0;
/// A box at least this many times taller than wide is read as vertical text (rotated 90 degrees).
const REC_VERTICAL_RATIO: f32 = 1.5;

/// Detector plans kept at once (one per distinct page size; a plan holds its own packed weights).
const DET_PLAN_CACHE_MAX: usize = 4;

/// Metadata key that holds the dictionary in the recognition model (as exposed by tract).
const DICT_PROPERTY: &str = "onnx.metadata_props.character";

/// A greyscale page, row-major, 0 = black, 255 = white.
#[derive(Debug, Clone)]
pub struct Gray {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// One line of text found on the page, in page pixel coordinates (axis-aligned; pages are
/// deskewed before).
#[derive(Debug, Clone, PartialEq)]
pub struct TextBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
    pub text: String,
    pub confidence: f32,
}

/// Errors of the OCR engine.
#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    /// A model file is missing, unreadable or not a usable ONNX model.
    #[error("OCR model {}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    /// The recognition model carries no usable character dictionary.
    #[error("OCR model {}: no usable character dictionary: {message}", path.display())]
    Dictionary { path: PathBuf, message: String },
    /// The page buffer does not match its dimensions, or is empty.
    #[error("bad page: {0}")]
    BadPage(String),
    /// tract failed while optimising or running a model.
    #[error("OCR inference failed ({stage}): {message}")]
    Inference {
        stage: &'static str,
        message: String,
    },
}

type Plan = Arc<TypedRunnableModel>;

/// Loaded models, dictionary and a cache of optimised plans.
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

pub struct Engine {
    det_model: InferenceModel,
    rec_model: InferenceModel,
    /// `dictionary[i]` is the character for class `i + 1` (class 0 is the CTC blank).
    dictionary: Vec<String>,
    /// Detector plans per input (height, width).
    det_plans: Mutex<HashMap<(usize, usize), Plan>>,
    /// Recogniser plans per input width (batch size 1).
    rec_plans: Mutex<HashMap<usize, Plan>>,
}

fn model_error(path: &Path, e: impl std::fmt::Display) -> OcrError {
    OcrError::Model {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    }
}

fn inference_error(stage: &'static str) -> impl FnOnce(TractError) -> OcrError {
    move |e| OcrError::Inference {
        stage,
        message: format!("{e:#}"),
    }
}

fn load_model(path: &Path) -> Result<InferenceModel, OcrError> {
    if !path.is_file() {
        return Err(model_error(path, "file not found"));
    }
    tract_onnx::onnx()
        .model_for_path(path)
        .map_err(|e| model_error(path, e))
}

/// Reads the dictionary from the model metadata: one character per line; a space is appended as
/// the last class.
fn load_dictionary(model: &InferenceModel, path: &Path) -> Result<Vec<String>, OcrError> {
    let dict_err = |message: String| OcrError::Dictionary {
        path: path.to_path_buf(),
        message,
    };
    let tensor = model
        .properties
        .get(DICT_PROPERTY)
        .ok_or_else(|| dict_err(format!("metadata key {DICT_PROPERTY:?} is missing")))?;
    let view = tensor
        .try_as_plain_ram()
        .map_err(|e| dict_err(format!("{e:#}")))?;
    let text = view
        .to_scalar::<String>()
        .map_err(|e| dict_err(format!("{e:#}")))?;
    let mut dictionary: Vec<String> = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line).to_string())
        .collect();
    // A trailing newline leaves one empty entry at the end.
    if dictionary.last().is_some_and(|s| s.is_empty()) {
        dictionary.pop();
    }
    if dictionary.is_empty() {
        return Err(dict_err("dictionary is empty".into()));
    }
    dictionary.push(" ".to_string());
    Ok(dictionary)
}

/// Checks that the model has one input of rank 4 with 3 channels and one output.
fn check_image_input(model: &InferenceModel, path: &Path) -> Result<(), OcrError> {
    if model.inputs.len() != 1 || model.outputs.len() != 1 {
        return Err(model_error(path, "expected one input and one output"));
    }
    let fact = model.input_fact(0).map_err(|e| model_error(path, e))?;
    let rank = fact.shape.rank().concretize();
    let channels = fact.shape.dim(1).and_then(|d| d.concretize());
    if rank != Some(4) || channels != Some(3.to_dim()) {
        return Err(model_error(
            path,
            format!("expected an N x 3 x H x W input, found {fact:?}"),
        ));
    }
    Ok(())
}

/// Optimises `model` for one concrete input shape and makes it runnable on the current thread only.
fn make_plan(
    model: &InferenceModel,
    fact: TypedFact,
    stage: &'static str,
) -> Result<Plan, OcrError> {
    let options = RunOptions {
        executor: Some(Executor::SingleThread),
        ..Default::default()
    };
    model
        .clone()
        .with_input_fact(0, fact.into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable_with_options(&options))
        .map_err(inference_error(stage))
}

impl Engine {
    /// Loads `ch_PP-OCRv4_det_infer.onnx` and `ch_PP-OCRv4_rec_infer.onnx` from `dir`; an error
    /// names the missing/bad file.
    pub fn load(dir: &Path) -> Result<Engine, OcrError> {
        let det_path = dir.join(DET_MODEL_FILE);
        let rec_path = dir.join(REC_MODEL_FILE);
        let det_model = load_model(&det_path)?;
        let rec_model = load_model(&rec_path)?;
        let dictionary = load_dictionary(&rec_model, &rec_path)?;
        let engine = Engine {
            det_model,
            rec_model,
            dictionary,
            det_plans: Mutex::new(HashMap::new()),
            rec_plans: Mutex::new(HashMap::new()),
        };
        // Check that the models are the expected ones: both take N x 3 x H x W images, the plan for
        // the first recogniser bucket (needed for nearly every page) builds, and the recogniser's
        // class count matches the dictionary. No detector plan is built here: its shape depends
        // on the page.
        check_image_input(&engine.det_model, &det_path)?;
        check_image_input(&engine.rec_model, &rec_path)?;
        let rec = engine
            .rec_plan(REC_WIDTH_BUCKETS[0])
            .map_err(|e| model_error(&rec_path, e))?;
        let classes = rec
            .model()
            .output_fact(0)
            .ok()
            .and_then(|f| f.shape.as_concrete().and_then(|s| s.last().copied()));
        if let Some(classes) = classes
            && classes != engine.dictionary.len() + 1
        {
            return Err(OcrError::Dictionary {
                path: rec_path,
                message: format!(
                    "model has {classes} classes, dictionary {} entries (+ blank)",
                    engine.dictionary.len()
                ),
            });
        }
        Ok(engine)
    }

    /// Number of characters the recogniser knows (space included).
    pub fn dictionary_len(&self) -> usize {
        self.dictionary.len()
    }

    fn det_plan(&self, height: usize, width: usize) -> Result<Plan, OcrError> {
        let mut plans = self.det_plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&(height, width)) {
            return Ok(plan.clone());
        }
        let plan = make_plan(
            &self.det_model,
            f32::fact([1, 3, height, width]),
            "detector plan",
        )?;
        if plans.len() >= DET_PLAN_CACHE_MAX {
            plans.clear();
        }
        plans.insert((height, width), plan.clone());
        Ok(plan)
    }

    fn rec_plan(&self, width: usize) -> Result<Plan, OcrError> {
        let mut plans = self.rec_plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(plan) = plans.get(&width) {
            return Ok(plan.clone());
        }
        // Batch and width must be concrete: with a symbolic dimension tract cannot type the
        // model's Reshape nodes ("shape input is variable").
        let plan = make_plan(
            &self.rec_model,
            f32::fact([1, 3, REC_HEIGHT, width]),
            "recogniser plan",
        )?;
        plans.insert(width, plan.clone());
        Ok(plan)
    }

    /// Finds and reads the text lines of a page; boxes come in reading order (top to bottom,
    /// left to right).
    pub fn read(&self, page: &Gray) -> Result<Vec<TextBox>, OcrError> {
        let boxes = self.detect(page)?;
        self.read_boxes(page, &boxes)
    }

    /// Reads the given boxes of a page (from [`Engine::detect`], possibly filtered or split);
    /// lines come in reading order, empty ones left out.
    pub fn read_boxes(&self, page: &Gray, boxes: &[PageBox]) -> Result<Vec<TextBox>, OcrError> {
        check_page(page)?;
        let mut lines = self.recognise(page, boxes)?;
        lines.retain(|b| !b.text.trim().is_empty());
        sort_reading_order(&mut lines);
        Ok(lines)
    }

    /// DB detection; returns boxes in page coordinates.
    pub fn detect(&self, page: &Gray) -> Result<Vec<PageBox>, OcrError> {
        check_page(page)?;
        let (pw, ph) = (page.width as usize, page.height as usize);
        let (dw, dh) = det_size(pw, ph);
        let plane = dw * dh;
        let mut input = vec![0f32; 3 * plane];
        resize_bilinear_into(page, dw, dh, &mut input[..plane]);
        for v in &mut input[..plane] {
            *v = (*v / 255.0 - 0.5) / 0.5;
        }
        let (first, rest) = input.split_at_mut(plane);
        rest[..plane].copy_from_slice(first);
        rest[plane..].copy_from_slice(first);
        let tensor = Tensor::from_shape(&[1, 3, dh, dw], &input)
            .map_err(inference_error("detector input"))?;
        drop(input);

        let plan = self.det_plan(dh, dw)?;
        let outputs = plan
            .run(tvec!(tensor.into_tvalue()))
            .map_err(inference_error("detector run"))?;
        let prob_view = outputs[0]
            .try_as_plain_ram()
            .map_err(inference_error("detector output"))?;
        let prob = prob_view
            .as_slice::<f32>()
            .map_err(inference_error("detector output"))?;
        if prob.len() != plane {
            return Err(OcrError::Inference {
                stage: "detector output",
                message: format!("expected {plane} values, got {}", prob.len()),
            });
        }
        Ok(db_boxes(prob, dw, dh, pw, ph))
    }

    /// Recognition of every box, grouped by width bucket; boxes too small to read are left out.
    fn recognise(&self, page: &Gray, boxes: &[PageBox]) -> Result<Vec<TextBox>, OcrError> {
        let max_width = REC_WIDTH_BUCKETS[REC_WIDTH_BUCKETS.len() - 1];
        // Resized width of every line at height 48, and its bucket.
        let mut jobs: Vec<(usize, usize, usize)> = Vec::with_capacity(boxes.len()); // (box, width, bucket)
        for (i, b) in boxes.iter().enumerate() {
            let (bw, bh) = (b.x1 - b.x0, b.y1 - b.y0);
            if bw < 1.0 || bh < 1.0 {
                continue;
            }
            let (line_w, line_h) = if bh >= bw * REC_VERTICAL_RATIO {
                (bh, bw)
            } else {
                (bw, bh)
            };
            let width = ((REC_HEIGHT as f32 * line_w / line_h).ceil() as usize).clamp(1, max_width);
            let bucket = REC_WIDTH_BUCKETS
                .iter()
                .copied()
                .find(|&b| b >= width)
                .unwrap_or(max_width);
            jobs.push((i, width, bucket));
        }
        // Bucket by bucket, so that each plan is fetched once.
        jobs.sort_by_key(|&(i, width, bucket)| (bucket, width, i));

        let mut results: Vec<Option<TextBox>> = vec![None; boxes.len()];
        let mut input: Vec<f32> = Vec::new();
        let mut current: Option<(usize, Plan)> = None;
        for &(i, width, bucket) in &jobs {
            let plan = match &current {
                Some((b, plan)) if *b == bucket => plan.clone(),
                _ => {
                    let plan = self.rec_plan(bucket)?;
                    current = Some((bucket, plan.clone()));
                    plan
                }
            };
            // One line per run: on one thread, tract is faster per line at batch size 1 than
            // with batches of 6 (measured 0.038 s vs 0.06 s per 48x320 line).
            let plane = REC_HEIGHT * bucket;
            input.clear();
            input.resize(3 * plane, REC_PAD_VALUE);
            render_line(page, &boxes[i], width, bucket, &mut input[..plane]);
            let (first, rest) = input.split_at_mut(plane);
            rest[..plane].copy_from_slice(first);
            rest[plane..].copy_from_slice(first);
            let tensor = Tensor::from_shape(&[1, 3, REC_HEIGHT, bucket], &input)
                .map_err(inference_error("recogniser input"))?;
            let outputs = plan
                .run(tvec!(tensor.into_tvalue()))
                .map_err(inference_error("recogniser run"))?;
            let out = &outputs[0];
            let shape = out.shape().to_vec();
            if shape.len() != 3 || shape[0] != 1 || shape[2] != self.dictionary.len() + 1 {
                return Err(OcrError::Inference {
                    stage: "recogniser output",
                    message: format!("unexpected output shape {shape:?}"),
                });
            }
            let view = out
                .try_as_plain_ram()
                .map_err(inference_error("recogniser output"))?;
            let probs = view
                .as_slice::<f32>()
                .map_err(inference_error("recogniser output"))?;
            let (text, confidence) = ctc_greedy(probs, shape[2], &self.dictionary);
            let b = &boxes[i];
            results[i] = Some(TextBox {
                x0: b.x0,
                y0: b.y0,
                x1: b.x1,
                y1: b.y1,
                text,
                confidence,
            });
        }
        Ok(results.into_iter().flatten().collect())
    }
}

/// A page buffer that matches its (non-zero) dimensions.
fn check_page(page: &Gray) -> Result<(), OcrError> {
    let (w, h) = (page.width as usize, page.height as usize);
    if w == 0 || h == 0 {
        return Err(OcrError::BadPage(format!("empty page {w}x{h}")));
    }
    if page.pixels.len() != w * h {
        return Err(OcrError::BadPage(format!(
            "{} pixels for a {w}x{h} page",
            page.pixels.len()
        )));
    }
    Ok(())
}

/// A detected box in page coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl PageBox {
    pub fn centre(&self) -> (f32, f32) {
        ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)
    }
}

/// Detector input size: the page scaled so its longer side is at most `DET_MAX_SIDE` (never
/// enlarged), each side rounded to the nearest multiple of 32 (at least 32).
fn det_size(w: usize, h: usize) -> (usize, usize) {
    let longer = w.max(h) as f32;
    let scale = if longer > DET_MAX_SIDE as f32 {
        DET_MAX_SIDE as f32 / longer
    } else {
        1.0
    };
    let round32 = |v: f32| (((v / 32.0).round() as usize) * 32).max(32);
    (round32(w as f32 * scale), round32(h as f32 * scale))
}

/// Bilinear resize of the whole page into `dst` (dw x dh, values 0..255), pixel centres aligned
/// as OpenCV's INTER_LINEAR does.
fn resize_bilinear_into(page: &Gray, dw: usize, dh: usize, dst: &mut [f32]) {
    let (sw, sh) = (page.width as usize, page.height as usize);
    let sx = sw as f32 / dw as f32;
    let sy = sh as f32 / dh as f32;
    let xs: Vec<(usize, usize, f32)> = (0..dw)
        .map(|x| taps((x as f32 + 0.5) * sx - 0.5, sw))
        .collect();
    for y in 0..dh {
        let (y0, y1, fy) = taps((y as f32 + 0.5) * sy - 0.5, sh);
        let r0 = &page.pixels[y0 * sw..(y0 + 1) * sw];
        let r1 = &page.pixels[y1 * sw..(y1 + 1) * sw];
        let out = &mut dst[y * dw..(y + 1) * dw];
        for (o, &(x0, x1, fx)) in out.iter_mut().zip(&xs) {
            let top = r0[x0] as f32 * (1.0 - fx) + r0[x1] as f32 * fx;
            let bottom = r1[x0] as f32 * (1.0 - fx) + r1[x1] as f32 * fx;
            *o = top * (1.0 - fy) + bottom * fy;
        }
    }
}

/// The two neighbouring source indices of a source coordinate and the weight of the second,
/// with replicated borders.
fn taps(s: f32, len: usize) -> (usize, usize, f32) {
    let max = (len - 1) as f32;
    let s = s.clamp(0.0, max);
    let i0 = s.floor();
    let i1 = (i0 + 1.0).min(max);
    (i0 as usize, i1 as usize, s - i0)
}

/// Samples the page bilinearly at (x, y) with replicated borders.
fn sample(page: &Gray, x: f32, y: f32) -> f32 {
    let (w, h) = (page.width as usize, page.height as usize);
    let (x0, x1, fx) = taps(x, w);
    let (y0, y1, fy) = taps(y, h);
    let p = |xx: usize, yy: usize| page.pixels[yy * w + xx] as f32;
    let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
    let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Cuts a box out of the full-resolution page, resized to REC_HEIGHT x `width`, normalised, into
/// the first `width` columns of `dst` (REC_HEIGHT x `stride`); the rest of each row stays as padded.
/// Boxes much taller than wide are turned 90 degrees counter-clockwise (vertical text).
fn render_line(page: &Gray, b: &PageBox, width: usize, stride: usize, dst: &mut [f32]) {
    let (bw, bh) = (b.x1 - b.x0, b.y1 - b.y0);
    let vertical = bh >= bw * REC_VERTICAL_RATIO;
    let norm = |v: f32| (v / 255.0 - 0.5) / 0.5;
    for v in 0..REC_HEIGHT {
        let row = &mut dst[v * stride..v * stride + width];
        let fv = (v as f32 + 0.5) / REC_HEIGHT as f32;
        for (u, o) in row.iter_mut().enumerate() {
            let fu = (u as f32 + 0.5) / width as f32;
            let (x, y) = if vertical {
                // Rotated counter-clockwise: output rows run right to left over the box,
                // output columns top to bottom.
                (b.x1 - fv * bw, b.y0 + fu * bh)
            } else {
                (b.x0 + fu * bw, b.y0 + fv * bh)
            };
            *o = norm(sample(page, x - 0.5, y - 0.5));
        }
    }
}

/// DB post-processing on the probability map `prob` (dw x dh); returns page-coordinate boxes.
fn db_boxes(prob: &[f32], dw: usize, dh: usize, pw: usize, ph: usize) -> Vec<PageBox> {
    // Threshold, then dilate with a 2x2 kernel: a pixel is set when it or its left, upper or
    // upper-left neighbour is above the threshold (OpenCV's anchor for an even kernel).
    let mut binary = vec![false; dw * dh];
    for y in 0..dh {
        for x in 0..dw {
            let hit = |xx: usize, yy: usize| prob[yy * dw + xx] > DET_THRESHOLD;
            binary[y * dw + x] = hit(x, y)
                || (x > 0 && hit(x - 1, y))
                || (y > 0 && hit(x, y - 1))
                || (x > 0 && y > 0 && hit(x - 1, y - 1));
        }
    }

    let components = component_bounds(&mut binary, dw, dh);
    let sx = pw as f32 / dw as f32;
    let sy = ph as f32 / dh as f32;
    let mut boxes = Vec::new();
    for c in components.into_iter().take(DET_MAX_CANDIDATES) {
        let (x0, y0, x1, y1) = (c.x0, c.y0, c.x1, c.y1);
        // Box over pixel centres, as a contour-based rectangle would be.
        let (w, h) = ((x1 - x0) as f32, (y1 - y0) as f32);
        if w.min(h) < DET_MIN_SIDE {
            continue;
        }
        let score = mean_in_rect(prob, dw, x0, y0, x1, y1);
        if score < DET_BOX_THRESHOLD {
            continue;
        }
        let d = w * h * DET_UNCLIP_RATIO / (2.0 * (w + h));
        let (ex0, ey0, ex1, ey1) = (x0 as f32 - d, y0 as f32 - d, x1 as f32 + d, y1 as f32 + d);
        if (ex1 - ex0).min(ey1 - ey0) < DET_MIN_SIDE + 2.0 {
            continue;
        }
        let b = PageBox {
            x0: (ex0 * sx).clamp(0.0, pw as f32),
            y0: (ey0 * sy).clamp(0.0, ph as f32),
            x1: (ex1 * sx).clamp(0.0, pw as f32),
            y1: (ey1 * sy).clamp(0.0, ph as f32),
        };
        if b.x1 - b.x0 >= 1.0 && b.y1 - b.y0 >= 1.0 {
            boxes.push(b);
        }
    }
    boxes
}

/// One 8-connected component of the binary map.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Component {
    /// Inclusive bounding box in map pixels.
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
    /// Number of pixels.
    pixels: usize,
}

/// Labels the 8-connected components of `binary` (cleared as it goes) by flood fill and returns
/// them in raster order of their first pixel.
fn component_bounds(binary: &mut [bool], w: usize, h: usize) -> Vec<Component> {
    let mut out = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for start in 0..w * h {
        if !binary[start] {
            continue;
        }
        binary[start] = false;
        stack.push(start);
        let mut c = Component {
            x0: usize::MAX,
            y0: usize::MAX,
            x1: 0,
            y1: 0,
            pixels: 0,
        };
        while let Some(p) = stack.pop() {
            let (x, y) = (p % w, p / w);
            c.x0 = c.x0.min(x);
            c.x1 = c.x1.max(x);
            c.y0 = c.y0.min(y);
            c.y1 = c.y1.max(y);
            c.pixels += 1;
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let q = ny * w + nx;
                    if binary[q] {
                        binary[q] = false;
                        stack.push(q);
                    }
                }
            }
        }
        out.push(c);
    }
    out
}

/// Mean of `prob` over the inclusive rectangle.
fn mean_in_rect(prob: &[f32], w: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> f32 {
    let mut sum = 0f64;
    for y in y0..=y1 {
        sum += prob[y * w + x0..=y * w + x1]
            .iter()
            .map(|&v| v as f64)
            .sum::<f64>();
    }
    (sum / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64) as f32
}

/// CTC greedy decoding of one sequence (`steps` x `classes` probabilities, softmax already applied
/// by the model): best class per step, repeats merged, blanks (class 0) dropped. Confidence is the
/// mean best probability of the kept characters (0 when nothing is kept).
fn ctc_greedy(seq: &[f32], classes: usize, dictionary: &[String]) -> (String, f32) {
    let mut text = String::new();
    let (mut sum, mut count) = (0f32, 0usize);
    let mut previous = usize::MAX;
    for step in seq.chunks_exact(classes) {
        let (best, p) = step
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |acc, (i, v)| if v > acc.1 { (i, v) } else { acc },
            );
        if best != 0
            && best != previous
            && let Some(ch) = dictionary.get(best - 1)
        {
            text.push_str(ch);
            sum += p;
            count += 1;
        }
        previous = best;
    }
    let confidence = if count > 0 { sum / count as f32 } else { 0.0 };
    (text, confidence)
}

/// Sorts boxes top to bottom, then left to right within a line. Boxes belong to the same line
/// when they overlap vertically by at least half the smaller height of the line's first box and
/// the box.
fn sort_reading_order(boxes: &mut Vec<TextBox>) {
    boxes.sort_by(|a, b| a.y0.total_cmp(&b.y0).then(a.x0.total_cmp(&b.x0)));
    let mut ordered = Vec::with_capacity(boxes.len());
    let mut line: Vec<TextBox> = Vec::new();
    for b in boxes.drain(..) {
        let same_line = line.first().is_some_and(|first| {
            let overlap = first.y1.min(b.y1) - first.y0.max(b.y0);
            let smaller = (first.y1 - first.y0).min(b.y1 - b.y0);
            overlap >= 0.5 * smaller
        });
        if !same_line && !line.is_empty() {
            line.sort_by(|a, b| a.x0.total_cmp(&b.x0));
            ordered.append(&mut line);
        }
        line.push(b);
    }
    line.sort_by(|a, b| a.x0.total_cmp(&b.x0));
    ordered.append(&mut line);
    *boxes = ordered;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn det_size_caps_longer_side_and_rounds_to_32() {
        assert_eq!(det_size(1687, 2292), (928, 1280));
        assert_eq!(det_size(1241, 1754), (896, 1280));
        assert_eq!(det_size(200, 100), (192, 96));
        assert_eq!(det_size(10, 10), (32, 32));
    }

    #[test]
    fn components_are_8_connected() {
        let (w, h) = (6, 4);
        #[rustfmt::skip]
        let px = [
            1, 0, 0, 0, 0, 0,
            0, 1, 0, 0, 1, 1,
            0, 0, 0, 0, 1, 0,
            0, 0, 0, 0, 0, 0,
        ];
        let mut b: Vec<bool> = px.iter().map(|&v| v == 1).collect();
        let c = component_bounds(&mut b, w, h);
        let bounds: Vec<_> = c
            .iter()
            .map(|c| (c.x0, c.y0, c.x1, c.y1, c.pixels))
            .collect();
        assert_eq!(bounds, vec![(0, 0, 1, 1, 2), (4, 1, 5, 2, 3)]);
    }

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let dict: Vec<String> = ["a", "b", " "].iter().map(|s| s.to_string()).collect();
        // classes: blank, a, b, space
        let seq = [
            0.1, 0.9, 0.0, 0.0, // a
            0.1, 0.8, 0.1, 0.0, // a (repeat)
            0.9, 0.1, 0.0, 0.0, // blank
            0.2, 0.7, 0.1, 0.0, // a
            0.0, 0.0, 0.4, 0.6, // space
        ];
        let (text, conf) = ctc_greedy(&seq, 4, &dict);
        assert_eq!(text, "aa ");
        assert!((conf - (0.9 + 0.7 + 0.6) / 3.0).abs() < 1e-6);
    }

    #[test]
    fn reading_order_groups_lines() {
        let tb = |x0: f32, y0: f32, h: f32, t: &str| TextBox {
            x0,
            y0,
            x1: x0 + 50.0,
            y1: y0 + h,
            text: t.into(),
            confidence: 1.0,
        };
        let mut v = vec![
            tb(300.0, 102.0, 30.0, "c"),
            tb(10.0, 100.0, 30.0, "b"),
            tb(10.0, 10.0, 30.0, "a"),
            tb(5.0, 140.0, 30.0, "d"),
        ];
        sort_reading_order(&mut v);
        let order: String = v.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(order, "abcd");
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = std::env::temp_dir().join(format!("ocr-engine-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = Engine::load(&dir).expect_err("loading from an empty directory must fail");
        assert!(matches!(err, OcrError::Model { .. }));
        assert!(err.to_string().contains(DET_MODEL_FILE), "{err}");
        std::fs::write(dir.join(DET_MODEL_FILE), b"not an onnx model").unwrap();
        let err = Engine::load(&dir).expect_err("a garbage model must fail");
        assert!(err.to_string().contains(DET_MODEL_FILE), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The models `scripts/ocr-models` puts into `target/ocr-models`
    /// (scripts/check runs it first); missing models fail the test.
    #[test]
    fn reads_a_rendered_blank_page_and_rejects_bad_buffers() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/ocr-models"));
        assert!(
            dir.join(REC_MODEL_FILE).is_file(),
            "run scripts/ocr-models to put the OCR models into target/ocr-models"
        );
        let engine = Engine::load(dir).unwrap();
        assert_eq!(engine.dictionary_len(), 6624);
        let blank = Gray {
            width: 300,
            height: 200,
            pixels: vec![255; 300 * 200],
        };
        assert!(engine.read(&blank).unwrap().is_empty());
        let bad = Gray {
            width: 300,
            height: 200,
            pixels: vec![255; 10],
        };
        assert!(matches!(engine.read(&bad), Err(OcrError::BadPage(_))));
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
    }
}
