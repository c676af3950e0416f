// Quantization modes on the CPU reference engine (ref-a):
//   - POQ: decode-time attention uses the current token's full-precision K/V and the dequantized past,
//     checked against a direct, independent computation; w4kv4-nopoq differs exactly there
//   - DESIGN's prefill-chunk semantics; token-level batched prefill equals token-by-token decoding
//   - mode names, refusals, and memory accounting by hand
#include <cmath>

#include "backend.h"
#include "cpu_weights.h"
#include "quant_formats.h"
#include "test_support.h"
#include "wkv/engine.h"

namespace wkv {
namespace {

std::shared_ptr<Model> ref_a(QuantMode mode) {
  LoadOptions o;
  o.n_threads = 2;
  o.mode = mode;
  o.backend = BackendKind::cpu;  // the reference under test, also on machines with a GPU
  return Model::load(test::shared_path("models/ref-a"), o);
}

const std::vector<TokenId> kPrompt = {1, 3207, 7825, 396, 5737, 354, 309, 260, 691, 285, 1015, 260, 1405, 639};

// K and V rows [layer][position][H_kv·D] as the engine computed them (before quantization).
using KvRows = std::vector<std::vector<std::vector<float>>>;

// An independent forward pass written from DESIGN.md, token by token (decode semantics), in double
// where it is cheap. Keys/values of earlier tokens are read back through quantize → dequantize when
// `kv4`; the current token's own K/V are full precision when `poq`, quantized otherwise. Returns the
// logits after every token.
// The 4-bit codes are computed from the engine's own FP32 K/V rows (`engine_k`, `engine_v`): quantization
// rounds, so a 1e-7 difference between two correct FP32/FP64 computations of k can flip a code and
// move a logit by 1e-2; feeding both sides the same rows keeps the comparison about what attention
// reads, which is what POQ is.
std::vector<std::vector<float>> direct_forward(const Model& model, const std::vector<TokenId>& ids, bool kv4, bool poq,
                                               const KvRows& engine_k, const KvRows& engine_v) {
  const ModelInfo& I = model.info();
  const CpuModelWeights& W = model.cpu_weights();
  const int d = I.dim, D = I.head_dim, Hkv = I.n_kv_heads, H = I.n_heads, kvd = Hkv * D;
  auto weights_of = [](const Linear& l) { return l.q4 ? dequantize_w4_ref(*l.q4) : l.w; };
  auto matvec = [](const std::vector<float>& w, const std::vector<double>& x, int out) {
    std::vector<double> y(out, 0.0);
    const size_t in = x.size();
    for (int o = 0; o < out; ++o)
      for (size_t i = 0; i < in; ++i) y[o] += double(w[o * in + i]) * x[i];
    return y;
  };
  auto rmsnorm = [&](const std::vector<double>& x, const std::vector<float>& g) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + I.norm_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * g[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int heads, int pos) {
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < D / 2; ++i) {
        const double ang = pos * std::pow(double(I.rope_theta), -2.0 * i / D);
        double& a = v[h * D + i];
        double& b = v[h * D + i + D / 2];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(ang) - b0 * std::sin(ang);
        b = b0 * std::cos(ang) + a0 * std::sin(ang);
      }
  };
  // Quantize → dequantize one token's K or V row per KV head with the layer's smoothing.
  auto fake_kv = [&](const std::vector<float>& row, const std::vector<float>& delta, const std::vector<float>& s) {
    std::vector<double> out(row.size());
    std::vector<float> x(D), y(D);
    std::vector<uint8_t> qs(D / 2);
    std::vector<KV4GroupHeader> hdr(D / model.kv_group());
    for (int h = 0; h < Hkv; ++h) {
      for (int c = 0; c < D; ++c) x[c] = row[h * D + c];
      const float* dl = delta.empty() ? nullptr : delta.data() + h * D;
      const float* sc = s.empty() ? nullptr : s.data() + h * D;
      quantize_kv4_ref(x.data(), D, model.kv_group(), dl, sc, qs.data(), hdr.data());
      dequantize_kv4_ref(qs.data(), hdr.data(), D, model.kv_group(), dl, sc, y.data());
      for (int c = 0; c < D; ++c) out[h * D + c] = y[c];
    }
    return out;
  };
  std::vector<std::vector<std::vector<double>>> Kfull(I.n_layers), Vfull(I.n_layers), Kq(I.n_layers), Vq(I.n_layers);
  std::vector<std::vector<float>> all_logits;
  for (size_t p = 0; p < ids.size(); ++p) {
    std::vector<double> x(W.embed.begin() + size_t(ids[p]) * d, W.embed.begin() + size_t(ids[p] + 1) * d);
    for (int l = 0; l < I.n_layers; ++l) {
      const LayerWeights& L = W.layers[l];
      const auto h = rmsnorm(x, L.attn_norm);
      auto q = matvec(weights_of(L.wq), h, H * D), k = matvec(weights_of(L.wk), h, kvd), v = matvec(weights_of(L.wv), h, kvd);
      rope(q, H, int(p));
      rope(k, Hkv, int(p));
      Kfull[l].push_back(k);
      Vfull[l].push_back(v);
      const KvSmoothing& sm = L.kv_smoothing;
      Kq[l].push_back(kv4 ? fake_kv(engine_k[l][p], sm.k_delta, sm.k_scale) : k);
      Vq[l].push_back(kv4 ? fake_kv(engine_v[l][p], sm.v_delta, sm.v_scale) : v);
      std::vector<double> att(H * D, 0.0);
      for (int hh = 0; hh < H; ++hh) {
        const int kvh = hh / (H / Hkv);
        std::vector<double> sc(p + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= p; ++j) {
          const auto& kj = (j == p && poq) ? Kfull[l][j] : Kq[l][j];
          double s = 0;
          for (int c = 0; c < D; ++c) s += q[hh * D + c] * kj[kvh * D + c];
          sc[j] = s / std::sqrt(double(D));
          mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (auto& s : sc) sum += (s = std::exp(s - mx));
        for (size_t j = 0; j <= p; ++j) {
          const auto& vj = (j == p && poq) ? Vfull[l][j] : Vq[l][j];
          for (int c = 0; c < D; ++c) att[hh * D + c] += sc[j] / sum * vj[kvh * D + c];
        }
      }
      const auto o = matvec(weights_of(L.wo), att, d);
      for (int i = 0; i < d; ++i) x[i] += o[i];
      const auto h2 = rmsnorm(x, L.ffn_norm);
      auto g = matvec(weights_of(L.w_gate), h2, I.ffn_dim);
      const auto u = matvec(weights_of(L.w_up), h2, I.ffn_dim);
      for (int i = 0; i < I.ffn_dim; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const auto dn = matvec(weights_of(L.w_down), g, d);
      for (int i = 0; i < d; ++i) x[i] += dn[i];
    }
    const auto logits = matvec(W.lm_head.w, rmsnorm(x, W.final_norm), I.vocab_size);
    all_logits.emplace_back(logits.begin(), logits.end());
  }
  return all_logits;
}

std::vector<std::vector<float>> decode_token_by_token(std::shared_ptr<Model> m, const std::vector<TokenId>& ids) {
  Session s(m);
  std::vector<std::vector<float>> out;
  for (TokenId id : ids) {
    s.eval(std::span(&id, 1));
    out.emplace_back(s.last_logits().begin(), s.last_logits().end());
  }
  return out;
}

// Token-by-token decoding through the backend directly, recording each layer's K/V rows.
std::vector<std::vector<float>> decode_observed(const Model& m, const std::vector<TokenId>& ids, KvRows* k, KvRows* v) {
  const int kvd = m.info().n_kv_heads * m.info().head_dim;
  k->assign(m.info().n_layers, {});
  v->assign(m.info().n_layers, {});
  auto state = make_cpu_session_state(m, SessionOptions{}, int(ids.size()));
  state->kv_observer = [&](int layer, const float* kr, const float* vr, int T) {
    EXPECT_EQ(T, 1);
    (*k)[layer].emplace_back(kr, kr + kvd);
    (*v)[layer].emplace_back(vr, vr + kvd);
  };
  std::vector<std::vector<float>> out;
  std::vector<float> logits(m.info().vocab_size);
  for (size_t p = 0; p < ids.size(); ++p) {
    state->forward(&ids[p], 1, int(p), logits.data(), false, 0);
    out.push_back(logits);
  }
  return out;
}

class RefAModes : public ::testing::Test {
 protected:
  void SetUp() override { WKV_REQUIRE_SHARED("models/ref-a/model.safetensors"); }
};

// Decode-step logits of the engine equal the direct computation in every KV setting, and POQ / no-POQ
// differ exactly where the current token's own K/V enter.
TEST_F(RefAModes, DecodeMatchesDirectComputationWithAndWithoutPoq) {
  struct Case {
    QuantMode mode;
    bool kv4, poq;
  } cases[] = {{QuantMode::fp16, false, false}, {QuantMode::kv4, true, true}, {QuantMode::w4kv4_rtn, true, true},
               {QuantMode::w4kv4_nopoq, true, false}};
  std::vector<std::vector<float>> poq_logits, nopoq_logits;
  for (const Case& c : cases) {
    auto model = ref_a(c.mode);
    KvRows k, v;
    const auto got = decode_observed(*model, kPrompt, &k, &v);
    EXPECT_EQ(got, decode_token_by_token(model, kPrompt));  // the Session path computes the same
    const auto expected = direct_forward(*model, kPrompt, c.kv4, c.poq, k, v);
    for (size_t p = 0; p < kPrompt.size(); ++p)
      EXPECT_LT(test::rel_l2(got[p].data(), expected[p].data(), got[p].size()), 2e-5)
          << quant_mode_name(c.mode) << " position " << p;
    if (c.mode == QuantMode::w4kv4_rtn) poq_logits = got;
    if (c.mode == QuantMode::w4kv4_nopoq) nopoq_logits = got;
  }
  // The first token has no past: with POQ it sees only itself at full precision, so w4kv4-rtn and
  // w4kv4-nopoq agree nowhere except where quantizing its own K/V happens to change nothing.
  double total_diff = 0;
  for (size_t p = 0; p < kPrompt.size(); ++p)
    total_diff += test::max_abs_diff(poq_logits[p].data(), nopoq_logits[p].data(), poq_logits[p].size());
  EXPECT_GT(total_diff, 1e-3);
  // And with the direct computation, swapping only the POQ flag reproduces the other mode.
  auto rtn = ref_a(QuantMode::w4kv4_rtn);
  KvRows k, v;
  decode_observed(*ref_a(QuantMode::w4kv4_nopoq), kPrompt, &k, &v);
  const auto swapped = direct_forward(*rtn, kPrompt, true, false, k, v);
  for (size_t p = 0; p < kPrompt.size(); ++p)
    EXPECT_LT(test::rel_l2(nopoq_logits[p].data(), swapped[p].data(), swapped[p].size()), 2e-5) << p;
}

TEST_F(RefAModes, TokenLevelBatchedPrefillEqualsDecode) {
  for (QuantMode mode : {QuantMode::kv4, QuantMode::w4kv4_nopoq, QuantMode::w4a4}) {
    auto model = ref_a(mode);
    SessionOptions so;
    so.token_level_poq = true;
    Session s(model, so);
    std::vector<float> all;
    s.eval(kPrompt, &all);
    const auto ref = decode_token_by_token(model, kPrompt);
    for (size_t p = 0; p < kPrompt.size(); ++p)
      EXPECT_LT(test::rel_l2(all.data() + p * 8192, ref[p].data(), 8192), 1e-5) << quant_mode_name(mode) << " " << p;
  }
}

TEST_F(RefAModes, PrefillChunkSeesItselfAtFullPrecision) {
  // DESIGN: inside one prefill chunk every key/value is full precision, so a single-chunk prefill in
  // kv4 computes exactly what fp16 computes; a second chunk sees the first one quantized.
  auto fp = ref_a(QuantMode::fp16), kv = ref_a(QuantMode::kv4);
  Session a(fp), b(kv);
  std::vector<float> la, lb;
  a.eval(kPrompt, &la);
  b.eval(kPrompt, &lb);
  EXPECT_EQ(la, lb);
  Session c(kv);
  std::vector<float> lc;
  c.eval(std::span(kPrompt).first(7), nullptr);
  c.eval(std::span(kPrompt).subspan(7), &lc);
  EXPECT_GT(test::max_abs_diff(lc.data(), la.data() + 7 * 8192, lc.size()), 1e-4);
}

// A backend may run several prefill chunks in one forward call (poq_chunk < T, what the CUDA backend does to
// dequantize its weights once per call): the chunks keep their POQ semantics, so one call over 14 tokens in
// chunks of 4 computes what four calls compute, and differs from one 14-token chunk.
TEST_F(RefAModes, SeveralChunksInOneForwardCallKeepChunkSemantics) {
  auto model = ref_a(QuantMode::w4kv4_rtn);
  const int n = int(kPrompt.size()), vocab = model->info().vocab_size;
  std::vector<float> one_call(size_t(n) * vocab), per_chunk(size_t(n) * vocab), one_chunk(size_t(n) * vocab);
  make_cpu_session_state(*model, SessionOptions{}, n)->forward(kPrompt.data(), n, 0, one_call.data(), true, 4);
  auto s = make_cpu_session_state(*model, SessionOptions{}, n);
  for (int p = 0; p < n; p += 4)
    s->forward(kPrompt.data() + p, std::min(4, n - p), p, per_chunk.data() + size_t(p) * vocab, true, 0);
  make_cpu_session_state(*model, SessionOptions{}, n)->forward(kPrompt.data(), n, 0, one_chunk.data(), true, 0);
  for (int p = 0; p < n; ++p)
    EXPECT_LT(test::rel_l2(one_call.data() + size_t(p) * vocab, per_chunk.data() + size_t(p) * vocab, vocab), 1e-6)
        << "position " << p;
  // The first chunk is the same either way; from the second on, earlier chunks are read quantized.
  EXPECT_LT(test::rel_l2(one_call.data(), one_chunk.data(), 4 * vocab), 1e-6);
  EXPECT_GT(test::max_abs_diff(one_call.data() + 4 * vocab, one_chunk.data() + 4 * vocab, size_t(n - 4) * vocab), 1e-4);
}

// How many tokens a prefill call may take when the device's free memory is short: multiples of the chunk,
// never below one chunk, counting only the scratch growth beyond what is already allocated.
TEST(FitForwardBatch, LargestChunkMultipleThatFits) {
  const int64_t mib = int64_t(1) << 20;
  EXPECT_EQ(fit_forward_batch(512, 2048, 0, mib, 4096 * mib, 256 * mib), 2048);  // plenty
  EXPECT_EQ(fit_forward_batch(512, 2048, 0, mib, 1280 * mib, 256 * mib), 1024);  // 1024 MiB of room
  EXPECT_EQ(fit_forward_batch(512, 2048, 0, mib, 1279 * mib, 256 * mib), 512);
  EXPECT_EQ(fit_forward_batch(512, 2048, 0, mib, 100 * mib, 256 * mib), 512);    // not even one chunk: one chunk
  EXPECT_EQ(fit_forward_batch(512, 2048, 1536, mib, 768 * mib, 256 * mib), 2048);  // 1536 tokens already held
  EXPECT_EQ(fit_forward_batch(512, 2048, 1024, mib, 768 * mib, 256 * mib), 1536);
  EXPECT_EQ(fit_forward_batch(6, 2048, 0, 1, 1 << 30, 0), 2046);  // cap rounded down to the chunk
  EXPECT_EQ(fit_forward_batch(4096, 2048, 0, 1, 1 << 30, 0), 4096);  // a chunk above the cap stays whole
  EXPECT_EQ(fit_forward_batch(0, 2048, 0, 1, 1 << 30, 0), 2048);     // chunk < 1 counts as 1
}

TEST_F(RefAModes, MemoryAccountingByHand) {
  const int64_t linear_params = 8 * (4 * 256 * 256 + 3 * 256 * 768);  // per model: q,k,v,o + gate,up,down
  const int64_t fixed_fp16 = (2 * 8192 * 256 + 256) * 2 + 8 * 2 * 256 * 2;  // embed, head, final + layer norms
  auto fp = ref_a(QuantMode::fp16);
  MemoryStats m = fp->weight_memory();
  EXPECT_EQ(m.weight_bytes_fp16, 11014400 * 2);
  EXPECT_EQ(m.weight_bytes, m.weight_bytes_fp16);
  auto q = ref_a(QuantMode::w4kv4_rtn);
  m = q->weight_memory();
  // W4 g128: half a byte per weight + (FP16 scale + FP16 zero) per 128 weights.
  EXPECT_EQ(m.weight_bytes, fixed_fp16 + linear_params / 2 + linear_params / 128 * 4);
  EXPECT_EQ(m.weight_bytes_fp16, 11014400 * 2);
  EXPECT_EQ(m.weight_format, "W4 g128");
  Session s(q);
  s.eval(std::span(kPrompt).first(5));
  m = s.memory_stats();
  // KV4 G = D = 128: per layer, K and V, 2 KV heads × (64 code bytes + 4 header bytes).
  EXPECT_EQ(m.kv_bytes_per_token, 8 * 2 * 2 * (64 + 4));
  EXPECT_EQ(m.kv_bytes_per_token_fp16, 8 * 2 * 256 * 2);
  EXPECT_EQ(m.kv_bytes_used, 5 * m.kv_bytes_per_token);
  EXPECT_EQ(m.kv_bytes_allocated, 2048 * m.kv_bytes_per_token);
  EXPECT_EQ(m.n_tokens, 5);
  s.eval(std::span(kPrompt).subspan(5, 1));
  EXPECT_EQ(s.memory_stats().kv_bytes_used, 6 * m.kv_bytes_per_token);
  EXPECT_EQ(s.memory_stats().layers.size(), 8u);
  auto a4 = ref_a(QuantMode::w4a4);
  EXPECT_EQ(a4->weight_memory().weight_format, "W4 per-channel");
  EXPECT_EQ(a4->weight_memory().weight_bytes, fixed_fp16 + linear_params / 2 +
                                                  8 * (4 * 256 + 2 * 768 + 256) * 4);  // one group per row
}

TEST_F(RefAModes, NamesAndRefusals) {
  for (QuantMode m : all_quant_modes()) EXPECT_EQ(quant_mode_from_name(quant_mode_name(m)), m);
  EXPECT_THROW(quant_mode_from_name("int3"), Error);
  try {
    ref_a(QuantMode::w4kv4);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_NE(std::string(e.what()).find("wkv quantize"), std::string::npos);
  }
  LoadOptions o;
  o.mode = QuantMode::w4;
  o.weight_group = 96;  // does not divide 256
  try {
    Model::load(test::shared_path("models/ref-a"), o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("group size 96"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace wkv
