/** The math answer grader: extraction, normalisation, equivalence. See grade.ts for the policy. */
export { extractAnswer, extractAnswerDetailed, lastBox, type ExtractOptions, type Extraction } from './extract.js';
export { normalizeAnswer, parseAnswer, type AnswerNode } from './normalize.js';
export { parseRational } from './rational.js';
export { casEqual, shutdownCas, MAX_CAS_CHARS, DEFAULT_CAS_BUDGET_MS, type CasVerdict } from './cas.js';
export { gradeAnswer, answersEquivalent, canonicalKey, type GradeOptions, type GradeResult } from './grade.js';
