// Lint rules: typescript-eslint's recommended set plus the house rules (no `any`, no unused code,
// no floating promises are left to the typechecker); generated and vendored paths are ignored.
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["node_modules/**", "var/**", ".bench/**", "dist/**"] },
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      "@typescript-eslint/no-namespace": "off",
      "prefer-const": ["error", { ignoreReadBeforeAssign: true }],
      "no-console": "off"
    }
  }
)
