"""Speed and memory benchmarks of δ-mem against the frozen backbone and PEFT LoRA (see README.md)."""
