// Errors the HTTP layer turns into OpenAI-style bodies:
// {"error": {"message", "type", "param", "code"}}, the shape the official clients parse into APIError.

export type ApiErrorType = 'invalid_request_error' | 'not_found_error' | 'rate_limit_error' | 'service_unavailable' | 'internal_error';

export interface ApiErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 for a bad field; `param` is the field as the client spelled it */
export function badField(param: string, message: string): ApiError {
  return new ApiError(400, `${param}: ${message}`, 'invalid_request_error', param, 'invalid_value');
}
