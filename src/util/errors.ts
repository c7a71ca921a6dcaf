/**
 * Errors caused by the user's input (files, flags, requests). The CLI prints their message alone,
 * without a stack trace, and exits non-zero. Messages name the file, tensor, field or flag.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** invalid or inconsistent config.json / mamba_config.json */
export class ConfigError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** a corrupt, truncated or mismatched checkpoint */
export class CheckpointError extends UserError {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}
