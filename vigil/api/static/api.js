// The REST API as the dashboard uses it: same origin, the session cookie, and the
// session's CSRF token on every write (the server refuses a write through a cookie
// without it). Errors come back as RFC 9457 problems; ApiError carries their detail.

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, detail, problem) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.problem = problem;
  }
}

let csrf = "";

export function setCsrf(token) {
  csrf = token || "";
}

/** One request; resolves to the decoded body, rejects with an ApiError. */
export async function request(method, path, body, extra) {
  const headers = { Accept: "application/json, application/problem+json", ...(extra || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrf;
  let resp;
  try {
    resp = await fetch(API + path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the API server (${e.message})`, null);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const detail = (data && (data.detail || data.title)) || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, detail, data);
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body, headers) => request("PUT", path, body, headers);
export const del = (path) => request("DELETE", path);

/** A path segment, escaped. */
export const seg = (s) => encodeURIComponent(s);
