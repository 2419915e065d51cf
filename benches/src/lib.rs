//! Helpers shared by jiangtang's benchmark binaries: an FLV file reader, a paced RTMP
//! publisher that records when it sent each frame, the relay process, and /proc sampling.

pub mod flv;
pub mod proc;
pub mod publisher;
