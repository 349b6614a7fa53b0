"""Hypothesis strategies: one per message type of firmware_protocol."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import firmware_protocol as fp
from firmware_protocol.events import MAX_OFFSET_PS

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
short_text = st.text(max_size=40).filter(lambda s: len(s.encode("utf-8")) <= 255)
float32s = st.floats(width=32, allow_nan=False)
finite = st.floats(allow_nan=False, allow_infinity=False)


def _param_value(param):
    spec = fp.PARAMETERS[param]
    if spec.kind is fp.ValueKind.INT64:
        return st.integers(-2**63, 2**63 - 1)
    return finite


param_values = st.sampled_from(list(fp.ParamId)).flatmap(
    lambda p: st.tuples(st.just(p), _param_value(p)))


@st.composite
def event_batches(draw, max_events=300):
    n = draw(st.integers(0, max_events))
    t_start = draw(st.integers(-2**62, 2**62))
    span = draw(st.integers(1, MAX_OFFSET_PS))
    offsets = np.sort(np.array(draw(st.lists(st.integers(0, span - 1), min_size=n, max_size=n)),
                               dtype=np.int64))
    channels = np.array(draw(st.lists(st.integers(0, 63), min_size=n, max_size=n)), dtype=np.uint8)
    return fp.EventBatch(draw(u32), t_start, t_start + span, offsets + t_start, channels)


uint8_arrays = st.lists(st.integers(0, 255), max_size=200).map(lambda v: np.array(v, np.uint8))
uint64_arrays = st.lists(u64, max_size=100).map(lambda v: np.array(v, np.uint64))
readings = st.builds(fp.DetectorReading, u64, float32s, float32s, float32s)

MESSAGES = {
    fp.IdentifyRequest: st.just(fp.IdentifyRequest()),
    fp.IdentifyReply: st.builds(fp.IdentifyReply, st.sampled_from(list(fp.Role)),
                                st.integers(0, 0x7F).map(fp.Capability), short_text, short_text,
                                short_text),
    fp.Heartbeat: st.builds(fp.Heartbeat, u32),
    fp.HeartbeatReply: st.builds(fp.HeartbeatReply, u32, u64, st.booleans()),
    fp.SetParameter: param_values.map(lambda pv: fp.SetParameter(*pv)),
    fp.GetParameter: st.builds(fp.GetParameter, st.sampled_from(list(fp.ParamId))),
    fp.ParameterValue: param_values.map(lambda pv: fp.ParameterValue(*pv)),
    fp.StartAcquisition: st.just(fp.StartAcquisition()),
    fp.StopAcquisition: st.just(fp.StopAcquisition()),
    fp.Ack: st.builds(fp.Ack, u32, st.integers(0, 255)),
    fp.Nack: st.builds(fp.Nack, u32, st.integers(0, 255), st.sampled_from(list(fp.ErrorCode)),
                       short_text),
    fp.PatternRequest: st.builds(fp.PatternRequest, u32, uint64_arrays),
    fp.PatternReply: st.builds(fp.PatternReply, u32, uint8_arrays),
    fp.ModulatorCalibration: st.builds(fp.ModulatorCalibration, finite, finite, finite, finite),
    fp.PatternUpload: st.builds(fp.PatternUpload, u64, uint8_arrays),
    fp.EventBatch: event_batches(),
    fp.TelemetryRequest: st.just(fp.TelemetryRequest()),
    fp.Telemetry: st.builds(fp.Telemetry, st.booleans(),
                            st.lists(readings, max_size=8).map(tuple)),
}

any_message = st.one_of(*MESSAGES.values())
