//! The integration suite, one test binary: each module was once its own binary, and each of
//! those linked all of burn, wgpu and cubecl again (about 125 MB and several seconds of linking
//! apiece). One binary keeps a cold CI build's disk use and link time down. Run one part with
//! `cargo test -p sealong-tests --test suite MODULE::`.

mod bad_input;
mod closed_pipe;
mod decoder_bad_input;
mod decoder_parity;
mod encoder_parity;
mod eval_files;
mod export;
mod families;
mod family_tokenizers;
mod import_order;
mod kill_sweep;
mod long_context;
mod loss_kernel;
mod mbr_golden;
mod mbr_kernel;
mod openai_backend;
mod orpo_parity;
mod provisioning;
mod quant_golden;
mod report;
mod run_cli;
mod sample_cli;
mod score_cli;
mod stored_blocks;
mod study_cli;
mod subem_cli;
mod subem_golden;
mod synth;
mod text_parity;
mod tiny_models;
mod tokenize_cli;
mod train;
mod train_cli;
mod train_data;
mod web_e2e;
mod web_scoring;
mod web_view;
