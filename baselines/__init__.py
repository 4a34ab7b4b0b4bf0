"""The paper's rival memory methods, behind the same memorize/answer/reset interface as δ-mem."""
