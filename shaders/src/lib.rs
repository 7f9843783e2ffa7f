//! cubecl kernels (similarity/MBR, fused losses) with plain-burn reference twins; knows no model.
