#include "model_quant.h"

namespace wkv {
namespace {

template <typename Fn>
void for_each_block_linear(CpuModelWeights& w, Fn&& fn) {
  static const char* const kNames[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  for (size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& L = w.layers[l];
    Linear* lins[] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
    for (int i = 0; i < 7; ++i) fn(*lins[i], "model.layers." + std::to_string(l) + "." + kNames[i]);
  }
}

}  // namespace

QuantMode default_quant_mode(const ModelInfo& info) {
  return info.format == "wkvq" ? QuantMode::w4kv4 : QuantMode::fp16;
}

void apply_quant_mode(LoadedModel& m, QuantMode mode, int weight_group) {
  const QuantSpec spec = quant_spec(mode);
  const std::string name = quant_mode_name(mode);
  if (m.info.format == "wkvq") {
    if (!spec.weights4 || spec.act4)
      throw Error(ErrorCode::unsupported, m.info.path + ": mode " + name +
                                              " needs the original floating-point model; this .wkvq file holds 4-bit weights "
                                              "(its modes: w4kv4, w4kv4-nopoq, w4kv4-rtn, w4)");
    if (mode == QuantMode::w4kv4_rtn) {
      if (m.info.quant_method == "wkvquant")
        throw Error(ErrorCode::unsupported, m.info.path + ": mode w4kv4-rtn needs round-to-nearest weights, but this file's "
                                                "weights were calibrated with WKVQuant; use the FP16 model");
      for (auto& L : m.weights->layers) L.kv_smoothing = KvSmoothing{};
    }
    return;
  }
  if (mode == QuantMode::w4kv4)
    throw Error(ErrorCode::unsupported, "mode w4kv4 uses calibrated parameters from a .wkvq file: run `wkv quantize " +
                                            m.info.path + " --method stats|wkvquant -o MODEL.wkvq` and load that file, "
                                            "or use w4kv4-rtn");
  if (!spec.weights4) return;
  for_each_block_linear(*m.weights, [&](Linear& lin, const std::string& tensor) {
    const int group = spec.per_channel ? lin.in : weight_group;
    if (group <= 0 || lin.in % group != 0 || group % 8 != 0)
      throw Error(ErrorCode::invalid_argument, "W4 group size " + std::to_string(group) + " does not fit " + tensor +
                                                   " (input size " + std::to_string(lin.in) +
                                                   "): the group must be a multiple of 8 that divides it (--group)");
    lin.q4 = std::make_shared<const W4Matrix>(quantize_w4_ref(lin.w.data(), lin.out, lin.in, group));
    lin.w = std::vector<float>();
    lin.act4 = spec.act4;
  });
  m.info.weight_group = spec.per_channel ? 0 : weight_group;
}

MemoryStats weight_memory_of(const ModelInfo& info, const CpuModelWeights& w, QuantMode mode) {
  MemoryStats s;
  s.backend = "cpu";
  const QuantSpec spec = quant_spec(mode);
  s.weight_format = !spec.weights4 ? "FP16"
                    : (spec.per_channel ? "W4 per-channel"
                                        : "W4 g" + std::to_string(w.layers.empty() || !w.layers[0].wq.q4
                                                                       ? 0
                                                                       : w.layers[0].wq.q4->group));
  const int64_t d = info.dim;
  // Embeddings, final norm and (untied) head stay FP16 in every mode.
  const int64_t fixed = int64_t(info.vocab_size) * d * 2 + d * 2 + (info.tied_embeddings ? 0 : int64_t(info.vocab_size) * d * 2);
  s.weight_bytes = s.weight_bytes_fp16 = fixed;
  s.backend_weight_bytes = int64_t(w.embed.size() + w.final_norm.size() + w.lm_head.w.size()) * 4;
  for (const LayerWeights& L : w.layers) {
    LayerMemory lm;
    const Linear* lins[] = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
    for (const Linear* lin : lins) {
      lm.weight_bytes += lin->format_bytes();
      lm.weight_bytes_fp16 += int64_t(lin->out) * lin->in * 2;
      s.backend_weight_bytes += lin->resident_bytes();
    }
    const int64_t norms = 2 * d * 2;
    const int64_t smoothing = L.kv_smoothing.identity() ? 0 : int64_t(L.kv_smoothing.k_delta.size()) * 4 * 4;
    lm.weight_bytes += norms + smoothing;
    lm.weight_bytes_fp16 += norms;
    s.backend_weight_bytes += int64_t(L.attn_norm.size() + L.ffn_norm.size()) * 4 + smoothing;
    s.weight_bytes += lm.weight_bytes;
    s.weight_bytes_fp16 += lm.weight_bytes_fp16;
    s.layers.push_back(lm);
  }
  return s;
}

}  // namespace wkv
