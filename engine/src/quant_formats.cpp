// Reference quantizers for W4 / KV4 / A4: the executable form of the spec in quant_formats.h.
#include "quant_formats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "wkv/error.h"

namespace wkv {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

[[noreturn]] void fail(const std::string& msg) { throw Error(ErrorCode::invalid_argument, msg); }

std::string name_of(const char* what) { return what && *what ? std::string(what) : std::string("tensor"); }

bool is_positive_normal_fp16(uint16_t bits) {
  // sign clear, exponent field in 1..30
  return (bits & 0x8000u) == 0 && (bits & 0x7C00u) != 0 && (bits & 0x7C00u) != 0x7C00u;
}

}  // namespace

// ---- W4 ---------------------------------------------------------------------------------------------

float lwc_sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }

void validate_w4_shape(int rows, int cols, int group, const char* what) {
  const std::string n = name_of(what);
  if (rows < 1 || cols < 1)
    fail(n + ": W4 shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "] must be positive");
  if (group < kW4ChannelsPerWord || group % kW4ChannelsPerWord != 0)
    fail(n + ": W4 group size " + std::to_string(group) + " must be a positive multiple of 8");
  if (cols % group != 0)
    fail(n + ": W4 group size " + std::to_string(group) + " does not divide the " + std::to_string(cols) +
         " input channels");
}

void validate_w4_matrix(const W4Matrix& m, const char* what) {
  validate_w4_shape(m.rows, m.cols, m.group, what);
  const size_t r = (size_t)m.rows;
  const size_t words = r * (size_t)m.words_per_row();
  const size_t groups = r * (size_t)m.groups_per_row();
  if (m.qweight.size() != words || m.scales.size() != groups || m.zeros.size() != groups)
    fail(name_of(what) + ": W4 arrays have sizes qweight " + std::to_string(m.qweight.size()) + ", scales " +
         std::to_string(m.scales.size()) + ", zeros " + std::to_string(m.zeros.size()) + "; expected " +
         std::to_string(words) + ", " + std::to_string(groups) + ", " + std::to_string(groups));
}

W4GroupParams w4_choose_group_params(const float* w, int n, float gamma, float beta) {
  if (n < 1) fail("W4 group: empty group");
  if (!std::isfinite(gamma) || !std::isfinite(beta))
    fail("W4 group: LWC factors must be finite (gamma " + std::to_string(gamma) + ", beta " +
         std::to_string(beta) + ")");
  float mn = kInf, mx = -kInf;
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(w[i])) fail("W4 group: weight " + std::to_string(i) + " is not finite");
    q4_minmax_update(w[i], mn, mx);
  }
  // Products evaluated separately (no FMA: -ffp-contract=off on the host).
  float lo = beta * mn;
  float hi = gamma * mx;
  uint16_t h_bits = float_to_fp16((hi - lo) / 15.0f);
  float h = fp16_to_float(h_bits);
  float z = 0.0f;
  bool regular = is_positive_normal_fp16(h_bits);
  if (regular) {
    z = q4_round(-lo / h);
    regular = std::fabs(z) <= kW4MaxAbsZero;
  }
  if (!regular) {
    lo = std::min(lo, 0.0f);
    hi = std::max(hi, 0.0f);
    h_bits = float_to_fp16((hi - lo) / 15.0f);
    if (!(fp16_to_float(h_bits) >= kW4MinScale)) h_bits = float_to_fp16(kW4MinScale);
    h = fp16_to_float(h_bits);
    z = q4_round(-lo / h);
  }
  if ((h_bits & 0x7C00u) == 0x7C00u)
    fail("W4 group: weight range [" + std::to_string(mn) + ", " + std::to_string(mx) +
         "] exceeds what an FP16 scale can represent");
  W4GroupParams p;
  p.scale = h_bits;
  p.zero = float_to_fp16(z + 0.0f);  // + 0 maps −0 to +0; |z| ≤ 1024 is an exact FP16 integer
  return p;
}

W4Matrix quantize_w4_ref(const float* W, int rows, int cols, int group, const float* lwc_a,
                         const float* lwc_b) {
  validate_w4_shape(rows, cols, group, "quantize_w4_ref");
  if (!W) fail("quantize_w4_ref: weight pointer is null");
  if ((lwc_a == nullptr) != (lwc_b == nullptr))
    fail("quantize_w4_ref: LWC parameters a and b must be given together (one of them is null)");
  W4Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.group = group;
  const int wpr = m.words_per_row(), gpr = m.groups_per_row();
  m.qweight.assign((size_t)rows * wpr, 0u);
  m.scales.assign((size_t)rows * gpr, 0);
  m.zeros.assign((size_t)rows * gpr, 0);
  for (int r = 0; r < rows; ++r) {
    for (int gi = 0; gi < gpr; ++gi) {
      const size_t pi = (size_t)r * gpr + gi;
      const float* w = W + (size_t)r * cols + (size_t)gi * group;
      float gamma = 1.0f, beta = 1.0f;
      if (lwc_a) {
        if (std::isnan(lwc_a[pi]) || std::isnan(lwc_b[pi]))
          fail("quantize_w4_ref: LWC parameter of row " + std::to_string(r) + " group " + std::to_string(gi) +
               " is NaN");
        gamma = lwc_sigmoid(lwc_a[pi]);
        beta = lwc_sigmoid(lwc_b[pi]);
      }
      W4GroupParams p;
      try {
        p = w4_choose_group_params(w, group, gamma, beta);
      } catch (const Error& e) {
        fail(std::string("quantize_w4_ref: row ") + std::to_string(r) + " group " + std::to_string(gi) +
             ": " + e.what());
      }
      m.scales[pi] = p.scale;
      m.zeros[pi] = p.zero;
      const float h = fp16_to_float(p.scale), z = fp16_to_float(p.zero);
      uint32_t* qw = m.qweight.data() + (size_t)r * wpr + (size_t)gi * (group / kW4ChannelsPerWord);
      for (int k = 0; k < group / kW4ChannelsPerWord; ++k) {
        uint8_t q8[kW4ChannelsPerWord];
        for (int c = 0; c < kW4ChannelsPerWord; ++c)
          q8[c] = (uint8_t)w4_quantize_value(w[k * kW4ChannelsPerWord + c], h, z);
        qw[k] = w4_pack_word(q8);
      }
    }
  }
  return m;
}

void dequantize_w4_row(const W4Matrix& m, int row, float* out) {
  if (row < 0 || row >= m.rows)
    fail("dequantize_w4_row: row " + std::to_string(row) + " outside [0, " + std::to_string(m.rows) + ")");
  const int wpr = m.words_per_row(), gpr = m.groups_per_row(), wpg = m.group / kW4ChannelsPerWord;
  const uint32_t* qw = m.qweight.data() + (size_t)row * wpr;
  for (int gi = 0; gi < gpr; ++gi) {
    const uint16_t hb = m.scales[(size_t)row * gpr + gi], zb = m.zeros[(size_t)row * gpr + gi];
    for (int k = 0; k < wpg; ++k) {
      const int word = gi * wpg + k;
      w4_dequantize_word(qw[word], hb, zb, out + (size_t)word * kW4ChannelsPerWord);
    }
  }
}

std::vector<float> dequantize_w4_ref(const W4Matrix& m) {
  validate_w4_matrix(m, "dequantize_w4_ref");
  std::vector<float> out((size_t)m.rows * m.cols);
  for (int r = 0; r < m.rows; ++r) dequantize_w4_row(m, r, out.data() + (size_t)r * m.cols);
  return out;
}

float w4_row_dot(const W4Matrix& m, int row, const float* x) {
  if (row < 0 || row >= m.rows)
    fail("w4_row_dot: row " + std::to_string(row) + " outside [0, " + std::to_string(m.rows) + ")");
  // Per group: h·(Σ q·x − z·Σ x). Eight lanes with fixed shifts let the compiler vectorize the unpack.
  static constexpr uint32_t kShift[kW4ChannelsPerWord] = {0, 16, 4, 20, 8, 24, 12, 28};
  const int wpr = m.words_per_row(), gpr = m.groups_per_row(), wpg = m.group / kW4ChannelsPerWord;
  const uint32_t* qw = m.qweight.data() + (size_t)row * wpr;
  float total = 0.0f;
  for (int gi = 0; gi < gpr; ++gi) {
    float qx[kW4ChannelsPerWord] = {}, sx[kW4ChannelsPerWord] = {};
    for (int k = 0; k < wpg; ++k) {
      const uint32_t word = qw[gi * wpg + k];
      const float* xv = x + (size_t)(gi * wpg + k) * kW4ChannelsPerWord;
      for (int c = 0; c < kW4ChannelsPerWord; ++c) {
        qx[c] += (float)((word >> kShift[c]) & 0xFu) * xv[c];
        sx[c] += xv[c];
      }
    }
    float sqx = 0.0f, ssx = 0.0f;
    for (int c = 0; c < kW4ChannelsPerWord; ++c) {
      sqx += qx[c];
      ssx += sx[c];
    }
    const float h = fp16_to_float(m.scales[(size_t)row * gpr + gi]);
    const float z = fp16_to_float(m.zeros[(size_t)row * gpr + gi]);
    total += h * (sqx - z * ssx);
  }
  return total;
}

void fake_quant_w4(float* W, int rows, int cols, int group, const float* lwc_a, const float* lwc_b) {
  const W4Matrix m = quantize_w4_ref(W, rows, cols, group, lwc_a, lwc_b);
  for (int r = 0; r < rows; ++r) dequantize_w4_row(m, r, W + (size_t)r * cols);
}

// ---- KV4 --------------------------------------------------------------------------------------------

void validate_kv4_shape(int D, int G, const char* what) {
  const std::string n = name_of(what);
  if (D < 2 || D % 2 != 0) fail(n + ": KV4 head dim " + std::to_string(D) + " must be even and ≥ 2");
  if (G < 2 || G % 2 != 0) fail(n + ": KV4 group size " + std::to_string(G) + " must be even and ≥ 2");
  if (D % G != 0)
    fail(n + ": KV4 group size " + std::to_string(G) + " does not divide head dim " + std::to_string(D));
}

size_t kv4_bytes_per_head(int D, int G) {
  validate_kv4_shape(D, G, "kv4_bytes_per_head");
  return (size_t)(D / 2) + sizeof(KV4GroupHeader) * (size_t)(D / G);
}

void validate_kv_smoothing(const float* delta, const float* s, int n, const char* what) {
  for (int c = 0; c < n; ++c) {
    if (delta && !std::isfinite(delta[c]))
      fail(name_of(what) + ": smoothing shift delta[" + std::to_string(c) + "] is not finite");
    if (s && !(std::isfinite(s[c]) && s[c] > 0.0f))
      fail(name_of(what) + ": smoothing scale s[" + std::to_string(c) + "] = " + std::to_string(s[c]) +
           " must be finite and > 0");
  }
}

void quantize_kv4_ref(const float* x, int D, int G, const float* delta, const float* s, uint8_t* qs,
                      KV4GroupHeader* hdr) {
  validate_kv4_shape(D, G, "quantize_kv4_ref");
  auto smooth = [&](int c) { return kv4_smooth(x[c], delta ? delta[c] : 0.0f, s ? s[c] : 1.0f); };
  for (int g0 = 0, gi = 0; g0 < D; g0 += G, ++gi) {
    float mn = kInf, mx = -kInf;
    for (int c = g0; c < g0 + G; ++c) q4_minmax_update(smooth(c), mn, mx);
    const KV4GroupHeader h = kv4_group_header(mn, mx);
    hdr[gi] = h;
    const float scale = fp16_to_float(h.scale), mnf = fp16_to_float(h.min);
    for (int c = g0; c < g0 + G; c += 2)
      qs[c / 2] = kv4_pack_byte(kv4_quantize_value(smooth(c), mnf, scale),
                                kv4_quantize_value(smooth(c + 1), mnf, scale));
  }
}

void dequantize_kv4_ref(const uint8_t* qs, const KV4GroupHeader* hdr, int D, int G, const float* delta,
                        const float* s, float* out) {
  validate_kv4_shape(D, G, "dequantize_kv4_ref");
  for (int c = 0; c < D; ++c) {
    const KV4GroupHeader& h = hdr[c / G];
    out[c] = kv4_dequantize_value(kv4_unpack(qs, c), fp16_to_float(h.min), fp16_to_float(h.scale),
                                  delta ? delta[c] : 0.0f, s ? s[c] : 1.0f);
  }
}

void fake_quant_kv4(float* x, int D, int G, const float* delta, const float* s) {
  validate_kv4_shape(D, G, "fake_quant_kv4");
  std::vector<uint8_t> qs((size_t)D / 2);
  std::vector<KV4GroupHeader> hdr((size_t)(D / G));
  quantize_kv4_ref(x, D, G, delta, s, qs.data(), hdr.data());
  dequantize_kv4_ref(qs.data(), hdr.data(), D, G, delta, s, x);
}

KvChannelStats::KvChannelStats(int n) : channels(n) {
  if (n < 1) fail("KvChannelStats: channel count " + std::to_string(n) + " must be positive");
  min.assign((size_t)n, kInf);
  max.assign((size_t)n, -kInf);
}

void KvChannelStats::add(const float* x) {
  for (int c = 0; c < channels; ++c) q4_minmax_update(x[c], min[c], max[c]);
  ++tokens;
}

void KvChannelStats::add_tokens(const float* x, int64_t count) {
  for (int64_t t = 0; t < count; ++t) add(x + t * channels);
}

void KvChannelStats::merge(const KvChannelStats& other) {
  if (other.channels != channels)
    fail("KvChannelStats::merge: channel counts differ (" + std::to_string(channels) + " vs " +
         std::to_string(other.channels) + ")");
  for (int c = 0; c < channels; ++c) {
    min[c] = std::min(min[c], other.min[c]);
    max[c] = std::max(max[c], other.max[c]);
  }
  tokens += other.tokens;
}

void kv_smoothing_from_stats(const float* ch_min, const float* ch_max, int n, float* delta, float* s) {
  if (n < 1) fail("kv_smoothing_from_stats: channel count " + std::to_string(n) + " must be positive");
  float t_max = 0.0f;
  for (int c = 0; c < n; ++c) {
    if (!std::isfinite(ch_min[c]) || !std::isfinite(ch_max[c]) || ch_min[c] > ch_max[c])
      fail("kv_smoothing_from_stats: channel " + std::to_string(c) + " has min " + std::to_string(ch_min[c]) +
           " and max " + std::to_string(ch_max[c]) + " (never observed or not finite)");
    // Mid-range and half-range in double: max + min may overflow float for extreme statistics.
    delta[c] = (float)(((double)ch_max[c] + (double)ch_min[c]) / 2.0);
    s[c] = (float)std::sqrt(((double)ch_max[c] - (double)ch_min[c]) / 2.0);
    t_max = std::max(t_max, s[c]);
  }
  if (!(t_max > 0.0f)) {
    for (int c = 0; c < n; ++c) s[c] = 1.0f;
    return;
  }
  const float floor_t = 1e-3f * t_max;
  double sum = 0.0;
  for (int c = 0; c < n; ++c) {
    s[c] = std::max(s[c], floor_t);
    sum += s[c];
  }
  const double mean = sum / n;
  for (int c = 0; c < n; ++c) s[c] = (float)(s[c] / mean);
}

// ---- A4 ---------------------------------------------------------------------------------------------

void fake_quant_a4_per_token(float* x, int n) {
  if (n < 1) return;
  float mn = kInf, mx = -kInf;
  for (int i = 0; i < n; ++i) q4_minmax_update(x[i], mn, mx);
  const float scale = (mx - mn) / 15.0f;
  if (!(scale > 0.0f) || !std::isfinite(scale)) return;
  const float z = q4_round(-mn / scale);
  for (int i = 0; i < n; ++i) x[i] = ((float)q4_clamp(q4_round(x[i] / scale) + z) - z) * scale;
}

}  // namespace wkv
