//! GGUF export and import, checked with llama.cpp's own reader (the `gguf` package from
//! PyPI, through scripts/gguf/report.py): every key and tensor of every file type reads
//! back; Q8_0 / Q4_0 / Q4_1 / F16 / BF16 blocks are byte-identical to gguf's quantizer;
//! its dequantizer equals ours (K-quants included); export → import gives the model back.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mlxtune_engine::data::{tokenize_record, DataFormat, Example, TokenizeOptions};
use mlxtune_engine::eval;
use mlxtune_engine::gguf::names::tensor_names;
use mlxtune_engine::gguf::{export_gguf, import_gguf, GgufFile, GgufQuant};
use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::models::spec::Role;
use mlxtune_engine::{weights, LoadOptions, Model, Tokenizer};
use serde_json::{json, Value};

mod common;

/// Helpers of this file: loading, exporting, running the Python reader.
mod helpers {
    pub use super::common::{fixture, max_abs, max_abs_diff, ARCHS};
    use super::*;

    pub fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    pub fn load(dir: &Path) -> Model {
        let opts = LoadOptions {
            dtype: Some(Dtype::Float32),
            quantize: None,
        };
        Model::load(dir, &opts).unwrap()
    }

    pub fn export(model: &Model, out: &Path, quant: &str) {
        let q: GgufQuant = quant.parse().unwrap();
        export_gguf(model, out, q, &mut |_| {}).unwrap();
    }

    /// Runs scripts/gguf/report.py over `files` with the `gguf` package that test.sh
    /// installs (or `MLXTUNE_GGUF_PY`); fails when the package is missing.
    pub fn inspect(reference: &Path, files: &[PathBuf], out: &Path) -> Value {
        let site = std::env::var_os("MLXTUNE_GGUF_PY")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".native/pytools/gguf-site"));
        assert!(
            site.join("gguf").is_dir(),
            "the `gguf` Python package is not at {} (./test.sh installs it: scripts/pytools.sh)",
            site.display()
        );
        let r = Command::new("python3")
            .arg(repo().join("scripts/gguf/report.py"))
            .arg("--reference")
            .arg(reference)
            .arg("--out")
            .arg(out)
            .args(files)
            .env("PYTHONPATH", &site)
            .output()
            .unwrap();
        assert!(
            r.status.success(),
            "report.py failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        serde_json::from_slice(&r.stdout).unwrap()
    }

    /// Greedy continuation of `prompt` by full forward passes (no cache involved).
    pub fn greedy(model: &Model, prompt: &[i32], n: usize) -> Vec<i32> {
        let mut ids = prompt.to_vec();
        for _ in 0..n {
            let x = Array::from_slice(&ids, &[1, ids.len() as i32]);
            let logits = model.forward(&x, None).unwrap();
            let last = logits
                .take_axis(Array::from_int(ids.len() as i32 - 1), 1)
                .unwrap();
            let next =
                mlxtune_engine::mlx_rs::ops::indexing::argmax_axis(&last, -1, false).unwrap();
            next.eval().unwrap();
            ids.push(next.item_cast::<i32>());
        }
        ids[prompt.len()..].to_vec()
    }

    pub fn examples(model: &Model) -> Vec<Example> {
        let tok = Tokenizer::from_dir(&model.dir, Some(&model.spec.tokens())).unwrap();
        [
            "The quick brown fox jumps over the lazy dog.",
            "Sphinx of black quartz, judge my vow.",
            "How vexingly quick daft zebras jump!",
        ]
        .iter()
        .map(|s| {
            let r = json!({ "text": s });
            tokenize_record(&tok, DataFormat::Text, &r, &TokenizeOptions::default()).unwrap()
        })
        .collect()
    }

    pub fn loss(model: &Model) -> f64 {
        eval::evaluate(&model.spec, &model.params(), &examples(model), 4)
            .unwrap()
            .loss
    }

    /// A llama whose rows are 256 wide (K-quant blocks), random weights, the llama
    /// fixture's tokenizer.
    pub fn wide_llama(dir: &Path) -> PathBuf {
        let out = dir.join("wide-llama");
        std::fs::create_dir_all(&out).unwrap();
        let mut cfg: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("llama").join("config.json")).unwrap(),
        )
        .unwrap();
        cfg["hidden_size"] = 256.into();
        cfg["intermediate_size"] = 512.into();
        cfg["head_dim"] = 64.into();
        cfg["num_hidden_layers"] = 2.into();
        std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            std::fs::copy(fixture("llama").join(f), out.join(f)).unwrap();
        }
        let cfg = mlxtune_engine::models::HfConfig::read(&out).unwrap();
        let spec = mlxtune_engine::models::spec_from_config(&cfg).unwrap();
        let mut w = weights::Weights::new();
        for (i, e) in spec.expected_tensors().into_iter().enumerate() {
            let key = mlxtune_engine::mlx_rs::random::key(i as u64).unwrap();
            let a = if e.role == Role::Other {
                mlxtune_engine::mlx_rs::ops::ones::<f32>(&e.shape).unwrap()
            } else {
                mlxtune_engine::mlx_rs::random::normal::<f32>(&e.shape, 0.0, 0.05, &key).unwrap()
            };
            w.insert(e.name, a);
        }
        weights::save_atomic(&out.join("model.safetensors"), &w, &Default::default()).unwrap();
        out
    }
}

use helpers::*;

const TYPES: &[&str] = &[
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M", "Q6_K",
];

/// Exports `model` in every type, reads them all with the `gguf` package and checks
/// what it found; returns the report.
fn export_all_and_inspect(model: &Model, dir: &Path, stem: &str) -> Value {
    let files: Vec<PathBuf> = TYPES
        .iter()
        .map(|t| {
            let f = dir.join(format!("{stem}-{t}.gguf"));
            export(model, &f, t);
            f
        })
        .collect();
    let report = inspect(&files[0], &files, dir);
    let names = tensor_names(&model.spec);
    for t in TYPES {
        let file = format!("{stem}-{t}.gguf");
        let r = &report[&file];
        let tensors = r["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), names.len(), "{file}: tensor count");
        for n in &names {
            assert!(
                tensors.iter().any(|x| x["name"] == n.gguf.as_str()),
                "{file}: {} missing",
                n.gguf
            );
        }
        // Every tensor of a type gguf can quantize was compared, byte for byte.
        let requantizable = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0"];
        for x in tensors {
            if requantizable.contains(&x["type"].as_str().unwrap()) {
                assert_eq!(
                    x["exact"], true,
                    "{file}: {} differs from gguf's quantizer",
                    x["name"]
                );
            }
        }
        if ["Q8_0", "Q4_0", "Q4_1"].contains(t) {
            assert!(
                tensors.iter().any(|x| x["type"] == *t),
                "{file}: no {t} tensor"
            );
        }
        // gguf's dequantizer and ours agree on every tensor.
        let theirs = weights::load_file(&dir.join(format!("{file}.safetensors"))).unwrap();
        let mut g = GgufFile::open(&dir.join(&file)).unwrap();
        for (name, a) in &theirs {
            let (v, shape, _) = g.tensor_f32(name).unwrap();
            let shape: Vec<i32> = shape.iter().map(|d| *d as i32).collect();
            let ours = Array::from_slice(&v, &shape);
            let d = max_abs_diff(&ours, a);
            assert!(
                d <= 1e-6 * max_abs(a).max(1.0),
                "{file}: {name} dequantizes differently ({d})"
            );
        }
    }
    report
}

#[test]
fn every_file_type_reads_back_completely_with_the_gguf_package() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let model = load(&fixture(arch));
        let report = export_all_and_inspect(&model, tmp.path(), arch);
        let meta = &report[format!("{arch}-Q4_1.gguf")]["metadata"];
        let spec = &model.spec;
        assert_eq!(meta["general.architecture"], *arch);
        assert_eq!(meta["general.file_type"], 3);
        assert_eq!(meta[format!("{arch}.block_count")], spec.num_layers());
        assert_eq!(meta[format!("{arch}.embedding_length")], spec.hidden_size);
        assert_eq!(
            meta[format!("{arch}.feed_forward_length")],
            spec.intermediate_size
        );
        assert_eq!(
            meta[format!("{arch}.context_length")],
            spec.max_position_embeddings
        );
        assert_eq!(meta[format!("{arch}.attention.head_count")], spec.num_heads);
        assert_eq!(meta["tokenizer.ggml.model"], "gpt2");
        let tokens = meta["tokenizer.ggml.tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), spec.vocab_size as usize);
        assert_eq!(
            meta["tokenizer.ggml.token_type"].as_array().unwrap().len(),
            tokens.len()
        );
        assert_eq!(meta["tokenizer.ggml.merges"].as_array().unwrap().len(), 123);
        assert_eq!(meta["tokenizer.ggml.bos_token_id"], 1);
        assert_eq!(meta["tokenizer.ggml.eos_token_id"], 3);
        assert_eq!(meta["tokenizer.ggml.padding_token_id"], 0);
        assert!(meta["tokenizer.ggml.add_bos_token"].is_boolean());
        let template = fixture(arch).join("chat_template.jinja");
        if template.exists() {
            assert_eq!(
                meta["tokenizer.chat_template"],
                std::fs::read_to_string(template).unwrap()
            );
        }
        if *arch == "lfm2" {
            // Per-layer kv heads, 0 for the convolution layers (layers 0 and 2).
            assert_eq!(meta["lfm2.attention.head_count_kv"], json!([0, 2, 0, 2]));
            assert_eq!(meta["lfm2.shortconv.l_cache"], 3);
            let t = report["lfm2-F32.gguf"]["tensors"].as_array().unwrap();
            let conv = t
                .iter()
                .find(|x| x["name"] == "blk.0.shortconv.conv.weight")
                .unwrap();
            assert_eq!(conv["shape"], json!([64, 3]));
            assert!(t.iter().any(|x| x["name"] == "token_embd_norm.weight"));
        } else {
            assert_eq!(meta[format!("{arch}.attention.head_count_kv")], 2);
        }
    }
}

#[test]
fn k_quants_are_read_by_the_gguf_package_and_stay_close_to_the_float_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let model = load(&wide_llama(tmp.path()));
    let report = export_all_and_inspect(&model, tmp.path(), "wide");
    let types = |file: &str| -> Vec<String> {
        report[file]["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["type"].as_str().unwrap().to_string())
            .collect()
    };
    let q4km = types("wide-Q4_K_M.gguf");
    assert!(
        q4km.contains(&"Q4_K".to_string()) && q4km.contains(&"Q6_K".to_string()),
        "{q4km:?}"
    );
    assert!(types("wide-Q6_K.gguf").contains(&"Q6_K".to_string()));
    let f32s = weights::load_file(&tmp.path().join("wide-F32.gguf.safetensors")).unwrap();
    for (file, bound) in [("wide-Q6_K.gguf", 0.02), ("wide-Q4_K_M.gguf", 0.1)] {
        let q = weights::load_file(&tmp.path().join(format!("{file}.safetensors"))).unwrap();
        for (name, a) in &q {
            let rel = max_abs_diff(a, &f32s[name]) / max_abs(&f32s[name]);
            assert!(rel < bound, "{file}: {name} off by {rel} of its range");
        }
    }
}

#[test]
fn export_then_import_gives_the_model_back() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let model = load(&fixture(arch));
        let base_loss = loss(&model);
        let prompt = [1, 40, 41, 42, 100];
        let base_ids = greedy(&model, &prompt, 8);
        for (quant, loss_bound) in [
            ("F32", 1e-6),
            ("F16", 1e-3),
            ("Q8_0", 0.01),
            ("Q4_1", 0.1),
            ("Q4_0", 0.1),
        ] {
            let file = tmp.path().join(format!("{arch}-{quant}.gguf"));
            export(&model, &file, quant);
            let dir = tmp.path().join(format!("{arch}-{quant}-imported"));
            import_gguf(&file, &dir, false).unwrap();
            let back = load(&dir);
            let l = loss(&back);
            let rel = ((l - base_loss) / base_loss).abs();
            assert!(rel < loss_bound, "{arch} {quant}: loss {base_loss} -> {l}");
            if quant == "F32" {
                for (name, a) in &model.weights {
                    assert_eq!(max_abs_diff(a, &back.weights[name]), 0.0, "{arch}: {name}");
                }
            }
            if quant == "F32" || quant == "F16" {
                assert_eq!(
                    greedy(&back, &prompt, 8),
                    base_ids,
                    "{arch} {quant}: greedy tokens"
                );
            }
            let tok = Tokenizer::from_dir(&dir, Some(&back.spec.tokens())).unwrap();
            let orig = Tokenizer::from_dir(&model.dir, Some(&model.spec.tokens())).unwrap();
            let text = "Hello, world! 123";
            assert_eq!(
                tok.encode(text, true).unwrap(),
                orig.encode(text, true).unwrap()
            );
            assert_eq!(tok.has_chat_template(), orig.has_chat_template(), "{arch}");
        }
    }
}

#[test]
fn bad_files_and_types_are_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = "Q3_XS".parse::<GgufQuant>().unwrap_err().to_string();
    assert!(e.contains("Q3_XS") && e.contains("Q4_K_M"), "{e}");

    let model = load(&fixture("qwen2"));
    let file = tmp.path().join("qwen2.gguf");
    export(&model, &file, "Q8_0");
    // Truncated: the header reads, the last tensor's data is cut.
    let bytes = std::fs::read(&file).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let e = import_gguf(&cut, &tmp.path().join("cut-dir"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cut.gguf") && e.contains("tensor `"), "{e}");
    assert!(!tmp.path().join("cut-dir").exists());
    // Truncated inside the header.
    std::fs::write(&cut, &bytes[..100]).unwrap();
    let e = import_gguf(&cut, &tmp.path().join("cut-dir"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a readable GGUF file"), "{e}");
    // A tensor type the reader does not know (IQ2_XXS, ggml type 16).
    let mut patched = bytes.clone();
    let name = b"token_embd.weight";
    let at = patched.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let n_dims = u32::from_le_bytes(patched[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * n_dims;
    patched[ty..ty + 4].copy_from_slice(&16u32.to_le_bytes());
    let f = tmp.path().join("iq2.gguf");
    std::fs::write(&f, &patched).unwrap();
    let e = import_gguf(&f, &tmp.path().join("iq2-dir"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("IQ2_XXS") && e.contains("iq2.gguf"), "{e}");
    // An architecture we do not run.
    let mut patched = bytes.clone();
    let at = bytes.windows(5).position(|w| w == b"qwen2").unwrap();
    patched[at..at + 5].copy_from_slice(b"gpt-2");
    let f = tmp.path().join("other.gguf");
    std::fs::write(&f, &patched).unwrap();
    let e = import_gguf(&f, &tmp.path().join("other-dir"), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("general.architecture") && e.contains("`gpt-2` is not supported"),
        "{e}"
    );
    // A failed export leaves nothing behind under the final name or a temporary one.
    let mut attached = load(&fixture("qwen2"));
    attached.weights.insert(
        "model.layers.0.mlp.up_proj.lora_a".into(),
        Array::from_slice(&[0f32; 4], &[2, 2]),
    );
    let target = tmp.path().join("never.gguf");
    let e = export_gguf(&attached, &target, GgufQuant::F16, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("fuse the adapter"), "{e}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("never"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Rewrites `src` without the `tokenizer.huggingface.json` key, as llama.cpp's converter
/// writes files.
fn without_hf_tokenizer(src: &Path, dst: &Path) {
    use candle_core::quantized::gguf_file::{self, Content};
    let mut f = std::fs::File::open(src).unwrap();
    let c = Content::read(&mut f).unwrap();
    let meta: Vec<(&str, &gguf_file::Value)> = c
        .metadata
        .iter()
        .filter(|(k, _)| *k != "tokenizer.huggingface.json")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let names: Vec<String> = c.tensor_infos.keys().cloned().collect();
    let tensors: Vec<_> = names
        .iter()
        .map(|n| c.tensor(&mut f, n, &candle_core::Device::Cpu).unwrap())
        .collect();
    let refs: Vec<(&str, _)> = names
        .iter()
        .map(|n| n.as_str())
        .zip(tensors.iter())
        .collect();
    let mut out = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut out, &meta, &refs).unwrap();
}

#[test]
fn a_file_without_the_original_tokenizer_gets_one_rebuilt_from_its_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello,   world!\n\nNumbers: 12345 and 3.14; quotes 'don't' \"x\".",
        "Ünïcödé — ça marche? 東京 🙂",
        "<|im_start|>user\nhi<|im_end|>",
    ];
    for arch in ARCHS {
        let model = load(&fixture(arch));
        let full = tmp.path().join(format!("{arch}.gguf"));
        export(&model, &full, "F16");
        let bare = tmp.path().join(format!("{arch}-bare.gguf"));
        without_hf_tokenizer(&full, &bare);
        let g = GgufFile::open(&bare).unwrap();
        assert!(g.get("tokenizer.huggingface.json").is_none());
        let dir = tmp.path().join(format!("{arch}-bare"));
        import_gguf(&bare, &dir, false).unwrap();
        let back = load(&dir);
        let tok = Tokenizer::from_dir(&dir, Some(&back.spec.tokens())).unwrap();
        let orig = Tokenizer::from_dir(&model.dir, Some(&model.spec.tokens())).unwrap();
        for text in texts {
            for special in [true, false] {
                let ids = orig.encode(text, special).unwrap();
                assert_eq!(tok.encode(text, special).unwrap(), ids, "{arch}: {text:?}");
                assert_eq!(
                    tok.decode(&ids, false).unwrap(),
                    orig.decode(&ids, false).unwrap(),
                    "{arch}: decode {text:?}"
                );
            }
        }
        assert_eq!(tok.eos_ids, orig.eos_ids, "{arch}");
        assert_eq!(tok.bos_id, orig.bos_id, "{arch}");
    }
}

#[test]
fn q8_0_q4_0_and_q4_1_import_as_mlx_quantized_layers_with_the_same_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ARCHS {
        let model = load(&fixture(arch));
        for (quant, bits) in [("Q8_0", 8), ("Q4_0", 4), ("Q4_1", 4)] {
            let file = tmp.path().join(format!("{arch}-{quant}.gguf"));
            export(&model, &file, quant);
            let dense_dir = tmp.path().join(format!("{arch}-{quant}-dense"));
            import_gguf(&file, &dense_dir, false).unwrap();
            let packed_dir = tmp.path().join(format!("{arch}-{quant}-mlx"));
            import_gguf(&file, &packed_dir, true).unwrap();
            let dense = load(&dense_dir);
            let packed = load(&packed_dir);
            let q = packed.quantization.expect("kept quantized");
            assert_eq!((q.bits, q.group_size), (bits, 32), "{arch} {quant}");
            let prefix = "model.layers.1.mlp.down_proj";
            let prefix = if *arch == "lfm2" {
                "model.layers.1.feed_forward.w2"
            } else {
                prefix
            };
            assert!(
                packed.weights.contains_key(&format!("{prefix}.scales")),
                "{arch} {quant}"
            );
            let ids = Array::from_slice(&[1i32, 40, 41, 42, 100, 7, 9, 11], &[1, 8]);
            let a = dense.forward(&ids, None).unwrap();
            let b = packed.forward(&ids, None).unwrap();
            let d = max_abs_diff(&a, &b) / max_abs(&a);
            assert!(
                d < 1e-4,
                "{arch} {quant}: MLX-quantized import differs by {d} (relative)"
            );
        }
    }
}

#[test]
fn an_mlx_quantized_model_exports_the_weights_it_computes_with() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["lfm2", "llama"] {
        let opts = LoadOptions {
            dtype: Some(Dtype::Float32),
            quantize: Some(mlxtune_engine::QuantSpec {
                group_size: 32,
                bits: 4,
            }),
        };
        let model = Model::load(&fixture(arch), &opts).unwrap();
        let file = tmp.path().join(format!("{arch}-mlx4.gguf"));
        export(&model, &file, "F32");
        let dir = tmp.path().join(format!("{arch}-mlx4"));
        import_gguf(&file, &dir, false).unwrap();
        let back = load(&dir);
        assert!(back.quantization.is_none());
        let ids = Array::from_slice(&[1i32, 40, 41, 42, 100, 7, 9, 11], &[1, 8]);
        let a = model.forward(&ids, None).unwrap();
        let d = max_abs_diff(&a, &back.forward(&ids, None).unwrap()) / max_abs(&a);
        assert!(
            d < 1e-4,
            "{arch}: exported 4-bit model differs by {d} (relative)"
        );
    }
}
