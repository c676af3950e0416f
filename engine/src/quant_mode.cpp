// Quantization mode names and their meaning (wkv/quant.h), and QuantMethod names (wkv/quantize.h).
#include "wkv/error.h"
#include "wkv/quant.h"
#include "wkv/quantize.h"

namespace wkv {

const char* quant_mode_name(QuantMode m) {
  switch (m) {
    case QuantMode::fp16: return "fp16";
    case QuantMode::w4: return "w4";
    case QuantMode::kv4: return "kv4";
    case QuantMode::w4kv4: return "w4kv4";
    case QuantMode::w4kv4_rtn: return "w4kv4-rtn";
    case QuantMode::w4kv4_nopoq: return "w4kv4-nopoq";
    case QuantMode::w4a4: return "w4a4";
  }
  return "?";
}

const std::vector<QuantMode>& all_quant_modes() {
  static const std::vector<QuantMode> modes = {QuantMode::fp16,      QuantMode::w4,          QuantMode::kv4,
                                               QuantMode::w4kv4,     QuantMode::w4kv4_rtn,   QuantMode::w4kv4_nopoq,
                                               QuantMode::w4a4};
  return modes;
}

QuantMode quant_mode_from_name(const std::string& name) {
  std::string valid;
  for (QuantMode m : all_quant_modes()) {
    if (name == quant_mode_name(m)) return m;
    valid += std::string(valid.empty() ? "" : ", ") + quant_mode_name(m);
  }
  throw Error(ErrorCode::invalid_argument, "unknown quantization mode '" + name + "' (valid: " + valid + ")");
}

QuantSpec quant_spec(QuantMode m) {
  QuantSpec s;
  switch (m) {
    case QuantMode::fp16: break;
    case QuantMode::w4: s.weights4 = true; s.learned = true; break;
    case QuantMode::kv4: s.kv4 = true; s.poq = true; break;
    case QuantMode::w4kv4: s.weights4 = s.kv4 = s.poq = s.learned = true; break;
    case QuantMode::w4kv4_rtn: s.weights4 = s.kv4 = s.poq = true; break;
    case QuantMode::w4kv4_nopoq: s.weights4 = s.kv4 = s.learned = true; break;
    case QuantMode::w4a4: s.weights4 = s.per_channel = s.kv4 = s.act4 = true; break;
  }
  return s;
}

const char* quant_method_name(QuantMethod m) {
  switch (m) {
    case QuantMethod::rtn: return "rtn";
    case QuantMethod::stats: return "stats";
    case QuantMethod::wkvquant: return "wkvquant";
  }
  return "?";
}

QuantMethod quant_method_from_name(const std::string& name) {
  if (name == "rtn") return QuantMethod::rtn;
  if (name == "stats") return QuantMethod::stats;
  if (name == "wkvquant") return QuantMethod::wkvquant;
  throw Error(ErrorCode::invalid_argument, "unknown quantization method '" + name + "' (valid: rtn, stats, wkvquant)");
}

}  // namespace wkv
