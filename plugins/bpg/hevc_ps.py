"""HEVC parameter sets (VPS, SPS, PPS): parse them into named fields and write them back.

One syntax description per parameter set (H.265 sections 7.3.2.1 to 7.3.2.3, E.2.1) drives both
directions: :class:`_Reader` fills a dict of named syntax elements while walking the RBSP bits,
:class:`_Writer` walks the same description and emits the bits from such a dict. So
``write_nal(kind, parse_nal(nal)) == nal`` for every parameter set the supported subset covers,
and a field changed in the dict (picture size, level) gives a valid parameter set.

Covered: one temporal sub-layer or several (profile/level per sub-layer), short-term reference
picture sets without inter-RPS prediction, long-term pictures, VUI without HRD parameters, the
range extension of SPS and PPS, tiles. Not covered (raise :class:`Unsupported`): scaling lists,
HRD parameters, inter-RPS prediction, multilayer/3D/SCC extensions. x265 writes none of these
with the settings the ``hevc444`` codec uses.

Elements that repeat are stored under indexed names, e.g. ``"column_width_minus1[2]"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

VPS_NUT, SPS_NUT, PPS_NUT = 32, 33, 34


class Unsupported(ValueError):
    """The parameter set uses syntax this module does not cover."""


# ---------------------------------------------------------------------------------------------
# NAL units and RBSP


def nal_type(nal: bytes) -> int:
    """``nal_unit_type`` from the two-byte NAL unit header."""
    if len(nal) < 2:
        raise ValueError("NAL unit shorter than its 2-byte header")
    return (nal[0] >> 1) & 0x3F


def unescape(payload: bytes) -> bytes:
    """Remove emulation prevention bytes (``00 00 03`` becomes ``00 00``)."""
    out = bytearray()
    zeros = 0
    for byte in payload:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def escape(rbsp: bytes) -> bytes:
    """Insert emulation prevention bytes so that no ``00 00 0x`` (x <= 3) occurs."""
    out = bytearray()
    zeros = 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Reader:
    def __init__(self, rbsp: bytes) -> None:
        self.bits = "".join(f"{b:08b}" for b in rbsp)
        self.pos = 0
        self.fields: dict[str, Any] = {}

    def _take(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise ValueError("parameter set ends early")
        value = int(self.bits[self.pos : self.pos + n], 2) if n else 0
        self.pos += n
        return value

    def u(self, n: int, name: str) -> int:
        self.fields[name] = value = self._take(n)
        return value

    def ue(self, name: str) -> int:
        zeros = 0
        while self._take(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("exp-Golomb code longer than 32 bits")
        self.fields[name] = value = (1 << zeros) - 1 + self._take(zeros)
        return value

    def se(self, name: str) -> int:
        code = self.ue(name)
        self.fields[name] = value = (code + 1) // 2 if code % 2 else -(code // 2)
        return value

    def trailing(self) -> None:
        if self._take(1) != 1:
            raise ValueError("rbsp_stop_one_bit is not 1")
        rest = self.bits[self.pos :]
        if rest.strip("0"):
            raise ValueError("non-zero bits after rbsp_stop_one_bit")
        self.pos = len(self.bits)


class _Writer:
    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self.out: list[str] = []

    def _get(self, name: str) -> int:
        try:
            return int(self.fields[name])
        except KeyError:
            raise ValueError(f"missing parameter-set field {name!r}") from None

    def u(self, n: int, name: str) -> int:
        value = self._get(name)
        if not 0 <= value < (1 << n):
            raise ValueError(f"{name}={value} does not fit in {n} bits")
        if n:
            self.out.append(f"{value:0{n}b}")
        return value

    def _ue_bits(self, code: int) -> str:
        if code < 0:
            raise ValueError("exp-Golomb code of a negative number")
        binary = f"{code + 1:b}"
        return "0" * (len(binary) - 1) + binary

    def ue(self, name: str) -> int:
        value = self._get(name)
        self.out.append(self._ue_bits(value))
        return value

    def se(self, name: str) -> int:
        value = self._get(name)
        self.out.append(self._ue_bits(2 * value - 1 if value > 0 else -2 * value))
        return value

    def trailing(self) -> None:
        bits = "".join(self.out) + "1"
        bits += "0" * (-len(bits) % 8)
        self.out = [bits]

    def rbsp(self) -> bytes:
        bits = "".join(self.out)
        return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


_Syntax = Callable[[Any], None]


# ---------------------------------------------------------------------------------------------
# Syntax descriptions (shared by reading and writing)


def _profile_tier_level(s: Any, prefix: str, max_sub_layers_minus1: int) -> None:
    s.u(2, f"{prefix}general_profile_space")
    s.u(1, f"{prefix}general_tier_flag")
    s.u(5, f"{prefix}general_profile_idc")
    s.u(32, f"{prefix}general_profile_compatibility_flags")
    # progressive/interlaced/non-packed/frame-only flags, 43 constraint bits, inbld/reserved bit
    s.u(48, f"{prefix}general_constraint_indicator_flags")
    s.u(8, f"{prefix}general_level_idc")
    profile_present, level_present = [], []
    for i in range(max_sub_layers_minus1):
        profile_present.append(s.u(1, f"{prefix}sub_layer_profile_present_flag[{i}]"))
        level_present.append(s.u(1, f"{prefix}sub_layer_level_present_flag[{i}]"))
    if max_sub_layers_minus1 > 0:
        for i in range(max_sub_layers_minus1, 8):
            s.u(2, f"{prefix}reserved_zero_2bits[{i}]")
    for i in range(max_sub_layers_minus1):
        if profile_present[i]:
            s.u(2, f"{prefix}sub_layer_profile_space[{i}]")
            s.u(1, f"{prefix}sub_layer_tier_flag[{i}]")
            s.u(5, f"{prefix}sub_layer_profile_idc[{i}]")
            s.u(32, f"{prefix}sub_layer_profile_compatibility_flags[{i}]")
            s.u(48, f"{prefix}sub_layer_constraint_indicator_flags[{i}]")
        if level_present[i]:
            s.u(8, f"{prefix}sub_layer_level_idc[{i}]")


def _sub_layer_ordering(s: Any, prefix: str, present: int, max_sub_layers_minus1: int) -> None:
    for i in range(0 if present else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        s.ue(f"{prefix}max_dec_pic_buffering_minus1[{i}]")
        s.ue(f"{prefix}max_num_reorder_pics[{i}]")
        s.ue(f"{prefix}max_latency_increase_plus1[{i}]")


def vps_syntax(s: Any) -> None:
    s.u(4, "vps_video_parameter_set_id")
    s.u(1, "vps_base_layer_internal_flag")
    s.u(1, "vps_base_layer_available_flag")
    s.u(6, "vps_max_layers_minus1")
    sub_layers = s.u(3, "vps_max_sub_layers_minus1")
    s.u(1, "vps_temporal_id_nesting_flag")
    s.u(16, "vps_reserved_0xffff_16bits")
    _profile_tier_level(s, "", sub_layers)
    present = s.u(1, "vps_sub_layer_ordering_info_present_flag")
    _sub_layer_ordering(s, "vps_", present, sub_layers)
    max_layer_id = s.u(6, "vps_max_layer_id")
    layer_sets = s.ue("vps_num_layer_sets_minus1")
    for i in range(1, layer_sets + 1):
        for j in range(max_layer_id + 1):
            s.u(1, f"layer_id_included_flag[{i}][{j}]")
    if s.u(1, "vps_timing_info_present_flag"):
        s.u(32, "vps_num_units_in_tick")
        s.u(32, "vps_time_scale")
        if s.u(1, "vps_poc_proportional_to_timing_flag"):
            s.ue("vps_num_ticks_poc_diff_one_minus1")
        if s.ue("vps_num_hrd_parameters"):
            raise Unsupported("VPS with HRD parameters")
    if s.u(1, "vps_extension_flag"):
        raise Unsupported("VPS extension")
    s.trailing()


def _st_ref_pic_set(s: Any, idx: int) -> None:
    if idx and s.u(1, f"inter_ref_pic_set_prediction_flag[{idx}]"):
        raise Unsupported("inter-RPS prediction")
    negative = s.ue(f"num_negative_pics[{idx}]")
    positive = s.ue(f"num_positive_pics[{idx}]")
    for i in range(negative):
        s.ue(f"delta_poc_s0_minus1[{idx}][{i}]")
        s.u(1, f"used_by_curr_pic_s0_flag[{idx}][{i}]")
    for i in range(positive):
        s.ue(f"delta_poc_s1_minus1[{idx}][{i}]")
        s.u(1, f"used_by_curr_pic_s1_flag[{idx}][{i}]")


def _vui(s: Any) -> None:
    if s.u(1, "aspect_ratio_info_present_flag") and s.u(8, "aspect_ratio_idc") == 255:
        s.u(16, "sar_width")
        s.u(16, "sar_height")
    if s.u(1, "overscan_info_present_flag"):
        s.u(1, "overscan_appropriate_flag")
    if s.u(1, "video_signal_type_present_flag"):
        s.u(3, "video_format")
        s.u(1, "video_full_range_flag")
        if s.u(1, "colour_description_present_flag"):
            s.u(8, "colour_primaries")
            s.u(8, "transfer_characteristics")
            s.u(8, "matrix_coeffs")
    if s.u(1, "chroma_loc_info_present_flag"):
        s.ue("chroma_sample_loc_type_top_field")
        s.ue("chroma_sample_loc_type_bottom_field")
    s.u(1, "neutral_chroma_indication_flag")
    s.u(1, "field_seq_flag")
    s.u(1, "frame_field_info_present_flag")
    if s.u(1, "default_display_window_flag"):
        for side in ("left", "right", "top", "bottom"):
            s.ue(f"def_disp_win_{side}_offset")
    if s.u(1, "vui_timing_info_present_flag"):
        s.u(32, "vui_num_units_in_tick")
        s.u(32, "vui_time_scale")
        if s.u(1, "vui_poc_proportional_to_timing_flag"):
            s.ue("vui_num_ticks_poc_diff_one_minus1")
        if s.u(1, "vui_hrd_parameters_present_flag"):
            raise Unsupported("VUI with HRD parameters")
    if s.u(1, "bitstream_restriction_flag"):
        s.u(1, "tiles_fixed_structure_flag")
        s.u(1, "motion_vectors_over_pic_boundaries_flag")
        s.u(1, "restricted_ref_pic_lists_flag")
        s.ue("min_spatial_segmentation_idc")
        s.ue("max_bytes_per_pic_denom")
        s.ue("max_bits_per_min_cu_denom")
        s.ue("log2_max_mv_length_horizontal")
        s.ue("log2_max_mv_length_vertical")


def sps_syntax(s: Any) -> None:
    s.u(4, "sps_video_parameter_set_id")
    sub_layers = s.u(3, "sps_max_sub_layers_minus1")
    s.u(1, "sps_temporal_id_nesting_flag")
    _profile_tier_level(s, "", sub_layers)
    s.ue("sps_seq_parameter_set_id")
    if s.ue("chroma_format_idc") == 3:
        s.u(1, "separate_colour_plane_flag")
    s.ue("pic_width_in_luma_samples")
    s.ue("pic_height_in_luma_samples")
    if s.u(1, "conformance_window_flag"):
        for side in ("left", "right", "top", "bottom"):
            s.ue(f"conf_win_{side}_offset")
    s.ue("bit_depth_luma_minus8")
    s.ue("bit_depth_chroma_minus8")
    poc_bits = s.ue("log2_max_pic_order_cnt_lsb_minus4") + 4
    present = s.u(1, "sps_sub_layer_ordering_info_present_flag")
    _sub_layer_ordering(s, "sps_", present, sub_layers)
    s.ue("log2_min_luma_coding_block_size_minus3")
    s.ue("log2_diff_max_min_luma_coding_block_size")
    s.ue("log2_min_luma_transform_block_size_minus2")
    s.ue("log2_diff_max_min_luma_transform_block_size")
    s.ue("max_transform_hierarchy_depth_inter")
    s.ue("max_transform_hierarchy_depth_intra")
    if s.u(1, "scaling_list_enabled_flag") and s.u(1, "sps_scaling_list_data_present_flag"):
        raise Unsupported("SPS scaling list data")
    s.u(1, "amp_enabled_flag")
    s.u(1, "sample_adaptive_offset_enabled_flag")
    if s.u(1, "pcm_enabled_flag"):
        s.u(4, "pcm_sample_bit_depth_luma_minus1")
        s.u(4, "pcm_sample_bit_depth_chroma_minus1")
        s.ue("log2_min_pcm_luma_coding_block_size_minus3")
        s.ue("log2_diff_max_min_pcm_luma_coding_block_size")
        s.u(1, "pcm_loop_filter_disabled_flag")
    for idx in range(s.ue("num_short_term_ref_pic_sets")):
        _st_ref_pic_set(s, idx)
    if s.u(1, "long_term_ref_pics_present_flag"):
        for i in range(s.ue("num_long_term_ref_pics_sps")):
            s.u(poc_bits, f"lt_ref_pic_poc_lsb_sps[{i}]")
            s.u(1, f"used_by_curr_pic_lt_sps_flag[{i}]")
    s.u(1, "sps_temporal_mvp_enabled_flag")
    s.u(1, "strong_intra_smoothing_enabled_flag")
    if s.u(1, "vui_parameters_present_flag"):
        _vui(s)
    if s.u(1, "sps_extension_present_flag"):
        rext = s.u(1, "sps_range_extension_flag")
        others = [s.u(1, f"sps_{n}_extension_flag") for n in ("multilayer", "3d", "scc")]
        others.append(s.u(4, "sps_extension_4bits"))
        if any(others):
            raise Unsupported("SPS multilayer/3D/SCC extension")
        if rext:
            for name in (
                "transform_skip_rotation_enabled_flag",
                "transform_skip_context_enabled_flag",
                "implicit_rdpcm_enabled_flag",
                "explicit_rdpcm_enabled_flag",
                "extended_precision_processing_flag",
                "intra_smoothing_disabled_flag",
                "high_precision_offsets_enabled_flag",
                "persistent_rice_adaptation_enabled_flag",
                "cabac_bypass_alignment_enabled_flag",
            ):
                s.u(1, name)
    s.trailing()


def pps_syntax(s: Any) -> None:
    s.ue("pps_pic_parameter_set_id")
    s.ue("pps_seq_parameter_set_id")
    s.u(1, "dependent_slice_segments_enabled_flag")
    s.u(1, "output_flag_present_flag")
    s.u(3, "num_extra_slice_header_bits")
    s.u(1, "sign_data_hiding_enabled_flag")
    s.u(1, "cabac_init_present_flag")
    s.ue("num_ref_idx_l0_default_active_minus1")
    s.ue("num_ref_idx_l1_default_active_minus1")
    s.se("init_qp_minus26")
    s.u(1, "constrained_intra_pred_flag")
    transform_skip = s.u(1, "transform_skip_enabled_flag")
    if s.u(1, "cu_qp_delta_enabled_flag"):
        s.ue("diff_cu_qp_delta_depth")
    s.se("pps_cb_qp_offset")
    s.se("pps_cr_qp_offset")
    s.u(1, "pps_slice_chroma_qp_offsets_present_flag")
    s.u(1, "weighted_pred_flag")
    s.u(1, "weighted_bipred_flag")
    s.u(1, "transquant_bypass_enabled_flag")
    tiles = s.u(1, "tiles_enabled_flag")
    s.u(1, "entropy_coding_sync_enabled_flag")
    if tiles:
        columns = s.ue("num_tile_columns_minus1")
        rows = s.ue("num_tile_rows_minus1")
        if not s.u(1, "uniform_spacing_flag"):
            for i in range(columns):
                s.ue(f"column_width_minus1[{i}]")
            for i in range(rows):
                s.ue(f"row_height_minus1[{i}]")
        s.u(1, "loop_filter_across_tiles_enabled_flag")
    s.u(1, "pps_loop_filter_across_slices_enabled_flag")
    if s.u(1, "deblocking_filter_control_present_flag"):
        s.u(1, "deblocking_filter_override_enabled_flag")
        if not s.u(1, "pps_deblocking_filter_disabled_flag"):
            s.se("pps_beta_offset_div2")
            s.se("pps_tc_offset_div2")
    if s.u(1, "pps_scaling_list_data_present_flag"):
        raise Unsupported("PPS scaling list data")
    s.u(1, "lists_modification_present_flag")
    s.ue("log2_parallel_merge_level_minus2")
    s.u(1, "slice_segment_header_extension_present_flag")
    if s.u(1, "pps_extension_present_flag"):
        rext = s.u(1, "pps_range_extension_flag")
        others = [s.u(1, f"pps_{n}_extension_flag") for n in ("multilayer", "3d", "scc")]
        others.append(s.u(4, "pps_extension_4bits"))
        if any(others):
            raise Unsupported("PPS multilayer/3D/SCC extension")
        if rext:
            if transform_skip:
                s.ue("log2_max_transform_skip_block_size_minus2")
            s.u(1, "cross_component_prediction_enabled_flag")
            if s.u(1, "chroma_qp_offset_list_enabled_flag"):
                s.ue("diff_cu_chroma_qp_offset_depth")
                for i in range(s.ue("chroma_qp_offset_list_len_minus1") + 1):
                    s.se(f"cb_qp_offset_list[{i}]")
                    s.se(f"cr_qp_offset_list[{i}]")
            s.ue("log2_sao_offset_scale_luma")
            s.ue("log2_sao_offset_scale_chroma")
    s.trailing()


SYNTAX: dict[int, _Syntax] = {VPS_NUT: vps_syntax, SPS_NUT: sps_syntax, PPS_NUT: pps_syntax}


def parse_nal(nal: bytes) -> dict[str, Any]:
    """Fields of a VPS, SPS or PPS NAL unit (header included, emulation prevention applied).

    The two header bytes are kept as ``"nal_header"``. Raises :class:`Unsupported` for syntax
    outside the covered subset and ``ValueError`` for a malformed unit.
    """
    kind = nal_type(nal)
    if kind not in SYNTAX:
        raise ValueError(f"NAL unit type {kind} is not a VPS, SPS or PPS")
    reader = _Reader(unescape(nal[2:]))
    SYNTAX[kind](reader)
    return {"nal_header": int.from_bytes(nal[:2], "big"), **reader.fields}


def write_nal(fields: dict[str, Any]) -> bytes:
    """The NAL unit (header, escaped RBSP) that :func:`parse_nal` would read as ``fields``."""
    header = int(fields["nal_header"])
    kind = (header >> 9) & 0x3F
    if kind not in SYNTAX:
        raise ValueError(f"NAL unit type {kind} is not a VPS, SPS or PPS")
    writer = _Writer(fields)
    SYNTAX[kind](writer)
    return header.to_bytes(2, "big") + escape(writer.rbsp())
