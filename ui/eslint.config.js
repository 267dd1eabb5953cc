// ESLint flat config: ESLint's and typescript-eslint's recommended rules; on src/ the type-aware
// set too (typed through tsconfig.json). The config files at the top are linted without types.
// Formatting is Prettier's (`npm run format`), so no stylistic rules here.
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/"] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    linterOptions: { reportUnusedDisableDirectives: "error" },
  },
  { files: ["*.js", "*.ts"], extends: [tseslint.configs.disableTypeChecked] },
);
