export function compileWat(file: string): Promise<Buffer>;
export function moduleSource(name: string, bytes: Buffer): string;
