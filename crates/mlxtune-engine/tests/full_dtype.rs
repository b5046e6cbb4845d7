//! A full fine-tune computed in bf16 of an f32 checkpoint is saved as the base is: f32
//! weights and the config's dtype unchanged (issue 17, defect 10).

#![allow(clippy::unwrap_used)]

mod common;

use common::train::*;
use mlxtune_engine::mlx_rs::Dtype;
use mlxtune_engine::weights;
use serde_json::json;

#[test]
fn a_bf16_full_fine_tune_of_an_f32_checkpoint_saves_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_text_data(tmp.path());
    let out = tmp.path().join("full");
    let extra = json!({"fineTuneType": "full", "maxSteps": 2,
                       "optimization": {"mixedPrecision": "bf16"}});
    run(&spec(config("llama", &data, extra)), &out);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["dtype"], "float32", "{cfg}");
    let w = weights::load_file(&out.join("model/model.safetensors")).unwrap();
    for (name, a) in &w {
        assert_eq!(a.dtype(), Dtype::Float32, "{name}");
    }
}
