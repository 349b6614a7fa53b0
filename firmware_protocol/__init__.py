"""Host<->QKD-board wire protocol: frames, messages, event batches (sans-I/O; see SPEC.md)."""

from firmware_protocol.codec import (Decoder, DecoderStats, Encoder, MalformedPayload,
                                     ProtocolAnomaly, UnknownMessage, UnsupportedVersion)
from firmware_protocol.framing import (FRAME_OVERHEAD, HEADER_SIZE, MAX_PAYLOAD_BYTES,
                                       PROTOCOL_VERSION, SYNC_WORD, crc32, encode_frame)
from firmware_protocol.messages import (MESSAGE_TYPES, Ack, Capability, DetectorReading,
                                        ErrorCode, EventBatch, GetParameter, Heartbeat,
                                        HeartbeatReply, IdentifyReply, IdentifyRequest, Message,
                                        ModulatorCalibration, Nack, ParameterValue, PatternReply,
                                        PatternRequest, PatternUpload, Role, SetParameter,
                                        StartAcquisition, StopAcquisition, Telemetry,
                                        TelemetryRequest, first_invalid_pattern_byte)
from firmware_protocol.params import PARAMETERS, ParamId, ParamSpec, ValueKind
from firmware_protocol.wire_facts import (MODULATOR_DRIVE_MAX_V, MODULATOR_DRIVE_MIN_V,
                                          N_DETECTORS, SYNC_CHANNEL)

__all__ = [
    "Ack", "Capability", "Decoder", "DecoderStats", "DetectorReading", "Encoder", "ErrorCode",
    "EventBatch", "FRAME_OVERHEAD", "GetParameter", "HEADER_SIZE", "Heartbeat", "HeartbeatReply",
    "IdentifyReply", "IdentifyRequest", "MAX_PAYLOAD_BYTES", "MESSAGE_TYPES", "MalformedPayload",
    "Message", "ModulatorCalibration", "Nack", "PARAMETERS", "PROTOCOL_VERSION", "ParamId",
    "ParamSpec", "ParameterValue", "PatternReply", "PatternRequest", "PatternUpload",
    "ProtocolAnomaly", "Role", "SYNC_WORD", "SetParameter", "StartAcquisition",
    "StopAcquisition", "Telemetry", "TelemetryRequest", "UnknownMessage", "UnsupportedVersion",
    "ValueKind", "crc32", "encode_frame", "first_invalid_pattern_byte", "MODULATOR_DRIVE_MAX_V",
    "MODULATOR_DRIVE_MIN_V", "N_DETECTORS", "SYNC_CHANNEL",
]
