"""SFT of the student on curated R1 traces: data (render, mask, pack), chunked loss, the Accelerate loop."""
