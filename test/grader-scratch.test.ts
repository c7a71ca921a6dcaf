import { gradeAnswer } from '../src/eval/grader/index.js';
const cases: [string,string,object?][] = [
 ['\\boxed{\\frac{14}{3}}','\\frac{14}{3}'],['\\boxed{3\\sqrt{13}}','3\\sqrt{13}'],['\\boxed{\\sqrt{117}}','3\\sqrt{13}'],
 ['\\boxed{25}','025'],['\\boxed{2/4}','\\frac12'],['\\boxed{\\text{west}}','\\text{east}'],['\\boxed{East}','\\text{east}'],
 ['\\boxed{(-2,1)}','(1,-2)'],['\\boxed{1+\\sqrt{19}, 1-\\sqrt{19}}','1 \\pm \\sqrt{19}'],['\\boxed{10080}','10,\\!080'],
 ['\\boxed{(a+5)(b+2)}','ab+2a+5b+10'],['\\boxed{\\cot x}','\\frac{\\cos x}{\\sin x}'],['\\boxed{90}','90^\\circ'],
 ['\\boxed{6.72\\times10^{-5}}','.0000672'],['\\boxed{(3,4)}','(3,4]'],['\\boxed{-2,1+\\sqrt5,1-\\sqrt5}','\\{1\\pm\\sqrt{5},-2\\}'],
 ['\\boxed{\\frac{1}{2004!}}','\\frac{1}{2006!}'],['\\boxed{x^5-x^4+x^3-x^2+x-1}','x^5 - x^4 + x^3 - x^2 + x - 1'],
 ['\\boxed{\\begin{pmatrix}-1/3\\\\2/3\\\\5/3\\end{pmatrix}}','\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}'],
 ['\\boxed{10^{10^{10}}}','5'], ['\\boxed{864}','864 \\mbox{ inches}^2'],['\\boxed{5x-7y+11z+4=0}','5x - 7y + 11z + 4 = 0'],['\\boxed{-5x+7y-11z-4=0}','5x - 7y + 11z + 4 = 0'],
];
for (const [r,g,o] of cases) { const t=performance.now(); console.log(JSON.stringify(r),'|',JSON.stringify(g),'=>',JSON.stringify(gradeAnswer(r,g,o??{})), (performance.now()-t).toFixed(1)); }
import { test } from 'vitest';
test('scratch', () => {});
